"""The durable, shared rate ledger: every export request first reserves a slot here.

Separate runs, processes and machines share one ledger object per organization, so together they never send
exports closer than `min_interval` or more than `max_per_day` in any rolling 24 hours. The ledger also keeps the
uncompressed bytes per day observed per data source, which the window planner uses to size export windows.

Layers, from the inside out:
- `earliest_free_slot`: the pure scheduling rule;
- `LedgerState`: what is stored, with its JSON format and pruning;
- `LedgerStore`: an atomic read-modify-write of one organization's state (`LocalLedgerStore` here, a folder;
  `GcsLedgerStore` in gcs_ledger.py, an object next to the data);
- `RateLedger`: reserve / admit / cancel / peek / record sizes, on top of any store.

Why a reservation is not enough: the vendor measures *arrivals*. A slot says when a request may leave; the
process that reserved it may wake late (scheduling, GC, a slow ledger write), so two senders whose slots are
exactly `min_interval` apart can arrive closer than that. Hence two more rules:
- every request is *admitted* right before it leaves: the ledger checks its spacing against the moments the
  others really sent (or were due to send) and records the moment it leaves, so a late wake-up pushes the next
  sender instead of crowding it;
- a guard band is added to the interval, covering what still happens between that record and the arrival
  (the ledger write itself, the network).
A 429 teaches the ledger too: nobody sharing it gets a slot before the vendor's Retry-After.
Admission also carries a *claim*: the days a sender is about to export, so that another run that wants the same
days waits for that ZIP instead of exporting them again.
"""

from __future__ import annotations

import bisect
import hashlib
import json
import os
import re
import socket
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime, timedelta
from functools import partial
from pathlib import Path
from typing import Any, Final, Protocol, TypeVar

from filelock import FileLock

from hatch_pipeline.contract import ExportWindow
from hatch_pipeline.export_api.errors import SlotUnavailable

ROLLING_DAY: Final = timedelta(hours=24)
"""The span in which at most `max_per_day` slots may fall (rolling, not calendar days: never wrong at midnight)."""

BYTES_RETENTION: Final = timedelta(days=400)
"""Byte observations older than this are dropped; exports reach only 180 days back, so older sizes never matter."""

FORMAT_VERSION: Final = 2
"""Format 2 adds `blocked_until` and `claims`; format 1 ledgers are read as format 2 without either. The optional
`writes` list is read as empty when absent, and earlier readers of format 2 ignore it."""

WRITES_KEPT: Final = 16
"""Write tokens kept in the state: far more writes than can land between one write and its retry's read."""
_READABLE_FORMATS: Final = frozenset({1, FORMAT_VERSION})

DEFAULT_CLAIM_TTL: Final = timedelta(minutes=30)
"""How long a claim holds when its owner neither stores nor releases it (a crash on another machine). It must
outlast one export (download included); a claim of a dead process on the same machine lapses at once."""

GUARD_SHARE: Final = 0.01
"""Default guard band as a share of the interval: 3 s at the vendor's 300 s."""


def default_guard(min_interval: timedelta) -> timedelta:
    return min_interval * GUARD_SHARE


_ORGANIZATION_KEY = re.compile(r"[0-9a-f]{16}")

T = TypeVar("T")


def organization_key(api_key: str) -> str:
    """The ledger key of an organization: a short hash of its API key, so the key itself is never stored."""
    if not api_key:
        raise ValueError("the API key is empty; set HATCH_API_KEY")
    return hashlib.sha256(api_key.encode()).hexdigest()[:16]


def require_organization_key(organization: str) -> str:
    """Accept only what `organization_key` returns: a raw key must never become a file or object name."""
    if not _ORGANIZATION_KEY.fullmatch(organization):
        raise ValueError(
            "the ledger organization must be organization_key(api_key) (16 lowercase hex characters), "
            "never the API key itself"
        )
    return organization


def as_utc(value: datetime, name: str) -> datetime:
    """Normalise an aware datetime to UTC; naive ones are refused because their meaning depends on the machine."""
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"{name} {value.isoformat()} has no time zone; pass an aware datetime, e.g. in UTC")
    return value.astimezone(UTC)


def utc_now() -> datetime:
    return datetime.now(UTC)


# --- the pure scheduling rule -----------------------------------------------------------------------------------


def earliest_free_slot(
    slots: Sequence[datetime],
    *,
    now: datetime,
    not_before: datetime | None,
    min_interval: timedelta,
    max_per_day: int,
    rolling: timedelta = ROLLING_DAY,
) -> datetime:
    """The earliest t >= max(now, not_before) that keeps every two slots `min_interval` apart and at most
    `max_per_day` slots in any `rolling` span (the vendor's 24 hours, plus a guard band), given the already
    reserved (sorted) `slots`.

    Gaps are filled: slots reserved far ahead by others (say after a Retry-After) do not push everybody behind
    them. That stays correct because each forbidden region is an open interval around existing slots; the earliest
    allowed time is therefore the start itself or the right end of one region (`s + min_interval` or `s + 24h`),
    and each candidate is checked against all the constraints it touches.
    """
    _check_limits(min_interval, max_per_day)
    start = as_utc(now, "now")
    if not_before is not None:
        start = max(start, as_utc(not_before, "not_before"))
    candidates = [start]
    for slot in slots:
        candidates += [slot + min_interval, slot + rolling]
    return min(t for t in candidates if t >= start and _is_free(slots, t, min_interval, max_per_day, rolling))


def next_slots(
    slots: Sequence[datetime],
    count: int,
    *,
    now: datetime,
    min_interval: timedelta,
    max_per_day: int,
    rolling: timedelta = ROLLING_DAY,
) -> list[datetime]:
    """The slots `count` exports sent one after the other would take, the first no earlier than `now`, given the
    already reserved (sorted) `slots`: `earliest_free_slot` applied again after each one."""
    taken = list(slots)
    chosen: list[datetime] = []
    for _ in range(count):
        slot = earliest_free_slot(
            taken,
            now=chosen[-1] if chosen else now,
            not_before=None,
            min_interval=min_interval,
            max_per_day=max_per_day,
            rolling=rolling,
        )
        bisect.insort(taken, slot)
        chosen.append(slot)
    return chosen


def _is_free(
    slots: Sequence[datetime], t: datetime, min_interval: timedelta, max_per_day: int, rolling: timedelta
) -> bool:
    position = bisect.bisect_left(slots, t)
    neighbours = slots[max(position - 1, 0) : position + 1]
    if any(abs(t - neighbour) < min_interval for neighbour in neighbours):
        return False
    # With t inserted at `position`, every run of max_per_day + 1 consecutive slots that includes t must span
    # `rolling`.
    merged = [*slots[:position], t, *slots[position:]]
    first = max(position - max_per_day, 0)
    last = min(position, len(merged) - 1 - max_per_day)
    return all(merged[i + max_per_day] - merged[i] >= rolling for i in range(first, last + 1))


def _check_limits(min_interval: timedelta, max_per_day: int) -> None:
    if min_interval < timedelta(0):
        raise ValueError(f"min_interval {min_interval} is negative; use zero or more")
    if max_per_day < 1:
        raise ValueError(f"max_per_day {max_per_day} allows no export at all; use 1 or more")


# --- the stored state -------------------------------------------------------------------------------------------


_HOST: Final = socket.gethostname()


@dataclass(frozen=True)
class Claim:
    """Days of one source that one sender is exporting now; others wait for its ZIP rather than export them too."""

    source: str
    window: ExportWindow
    owner: str
    """`host/pid/token`: unique per export, so only its sender releases it."""
    expires_at: datetime

    def is_live(self, now: datetime) -> bool:
        """Not expired, and not left behind by a process of this machine that no longer runs, nor by an export of
        this process that has ended."""
        if self.expires_at <= now:
            return False
        host, _, rest = self.owner.partition("/")
        pid = rest.partition("/")[0]
        if host != _HOST or not pid.isdigit():
            return True
        if int(pid) == os.getpid():
            return self.owner in _HELD_CLAIMS
        return _process_runs(int(pid))

    def to_json(self) -> dict[str, str]:
        return {
            "source": self.source,
            "start": self.window.start.isoformat(),
            "end": self.window.end.isoformat(),
            "owner": self.owner,
            "expires_at": self.expires_at.isoformat(),
        }

    @classmethod
    def from_json(cls, document: Mapping[str, str]) -> Claim:
        return cls(
            source=document["source"],
            window=ExportWindow(date.fromisoformat(document["start"]), date.fromisoformat(document["end"])),
            owner=document["owner"],
            expires_at=as_utc(datetime.fromisoformat(document["expires_at"]), "claim expiry"),
        )


def new_owner() -> str:
    return f"{_HOST}/{os.getpid()}/{uuid.uuid4().hex[:12]}"


def _process_runs(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # it runs, under another user
        return True
    return True


@dataclass(frozen=True)
class LedgerState:
    """One organization's ledger: slots (sorted, UTC: reserved, or the moment a request was admitted), observed
    uncompressed bytes per source and day, the vendor's last Retry-After, and the claims of exports under way."""

    slots: tuple[datetime, ...] = ()
    bytes_per_day: Mapping[str, Mapping[date, float]] = field(default_factory=dict, hash=False)
    blocked_until: datetime | None = None
    """No slot before this (the vendor's Retry-After, for every process sharing the ledger)."""
    claims: tuple[Claim, ...] = ()
    writes: tuple[str, ...] = ()
    """Tokens of the last few writes (`WRITES_KEPT`), so a store whose write may have landed before a retry of it
    can tell, and never applies one change twice."""

    def __post_init__(self) -> None:
        for slot in self.slots:
            if slot.tzinfo is not UTC:
                raise ValueError(f"slot {slot.isoformat()} is not in UTC; normalise it with as_utc")
        if list(self.slots) != sorted(self.slots):
            raise ValueError("ledger slots must be sorted")

    def pruned(self, now: datetime, reach: timedelta = ROLLING_DAY) -> LedgerState:
        """Drop slots that can no longer constrain a slot at or after `now` (older than `reach`, the longest span a
        limit looks back, at least 24 hours), and byte observations too old to matter, so the stored object stays
        small."""
        now = as_utc(now, "now")
        oldest_slot = now - max(ROLLING_DAY, reach)
        oldest_day = (now - BYTES_RETENTION).date()
        return LedgerState(
            slots=tuple(slot for slot in self.slots if slot > oldest_slot),
            bytes_per_day={
                source: kept
                for source, days in self.bytes_per_day.items()
                if (kept := {day: size for day, size in days.items() if day >= oldest_day})
            },
            blocked_until=self.blocked_until if self.blocked_until and self.blocked_until > now else None,
            claims=tuple(claim for claim in self.claims if claim.expires_at > now),
            writes=self.writes,
        )

    def with_slot(self, slot: datetime) -> LedgerState:
        slots = list(self.slots)
        bisect.insort(slots, as_utc(slot, "slot"))
        return replace(self, slots=tuple(slots))

    def without_slot(self, slot: datetime) -> LedgerState:
        """One occurrence of `slot` removed (none when absent: a pruned or already cancelled slot)."""
        slots = list(self.slots)
        if slot in slots:
            slots.remove(slot)
        return replace(self, slots=tuple(slots))

    def with_bytes(self, source: str, sizes: Mapping[date, float]) -> LedgerState:
        """Newest observation per day wins."""
        merged = {**self.bytes_per_day.get(source, {}), **sizes}
        return replace(self, bytes_per_day={**self.bytes_per_day, source: merged})

    def blocked(self, until: datetime) -> LedgerState:
        until = as_utc(until, "until")
        return replace(self, blocked_until=max(until, self.blocked_until) if self.blocked_until else until)

    def written_by(self, token: str) -> LedgerState:
        """This state as the write `token` stores it: the token joins the last `WRITES_KEPT`."""
        return replace(self, writes=(*self.writes, token)[-WRITES_KEPT:])

    def with_claim(self, claim: Claim) -> LedgerState:
        """`claim` replaces any earlier claim of the same owner."""
        return replace(self, claims=(*self.without_claim(claim.owner).claims, claim))

    def without_claim(self, owner: str) -> LedgerState:
        return replace(self, claims=tuple(claim for claim in self.claims if claim.owner != owner))

    def to_json(self) -> bytes:
        document = {
            "format": FORMAT_VERSION,
            "slots": [slot.isoformat() for slot in self.slots],
            "bytes_per_day": {
                source: {day.isoformat(): size for day, size in sorted(days.items())}
                for source, days in sorted(self.bytes_per_day.items())
            },
            "blocked_until": self.blocked_until.isoformat() if self.blocked_until else None,
            "claims": [claim.to_json() for claim in self.claims],
            "writes": list(self.writes),
        }
        return json.dumps(document, indent=1).encode()

    @classmethod
    def from_json(cls, data: bytes, where: str) -> LedgerState:
        """Parse a stored ledger; `where` (a path or gs:// URL) goes into the error so it can be inspected."""
        try:
            document: Any = json.loads(data)
            version = document.get("format")
            if version not in _READABLE_FORMATS:
                raise ValueError(f"it has format {version!r} and this code reads format {FORMAT_VERSION}")
            blocked = document.get("blocked_until")
            return cls(
                slots=tuple(sorted(as_utc(datetime.fromisoformat(raw), "slot") for raw in document["slots"])),
                bytes_per_day={
                    source: {date.fromisoformat(day): float(size) for day, size in days.items()}
                    for source, days in document["bytes_per_day"].items()
                },
                blocked_until=as_utc(datetime.fromisoformat(blocked), "blocked_until") if blocked else None,
                claims=tuple(Claim.from_json(claim) for claim in document.get("claims", [])),
                writes=tuple(str(token) for token in document.get("writes", [])),
            )
        except (ValueError, TypeError, KeyError, AttributeError) as error:
            raise ValueError(
                f"the rate ledger at {where} is unreadable ({error}); upgrade hatch_pipeline if a newer version "
                "wrote it, or move it aside to start an empty ledger"
            ) from error


# --- stores -----------------------------------------------------------------------------------------------------


class LedgerStore(Protocol):
    def update(self, organization: str, change: Callable[[LedgerState], tuple[LedgerState, T]]) -> T:
        """Atomic read-modify-write of one organization's state: no lost updates across processes/machines.

        `change` may run more than once (stores that detect conflicts retry it) and may raise to abort without
        writing anything.
        """
        ...

    def read(self, organization: str) -> LedgerState: ...


class LocalLedgerStore:
    """A folder with a JSON file per organization, for local runs: a file lock serialises writers on this
    machine, and writing a temp file then `os.replace` keeps readers from ever seeing a half-written file."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)

    def __repr__(self) -> str:
        return f"LocalLedgerStore({str(self.folder)!r})"

    def update(self, organization: str, change: Callable[[LedgerState], tuple[LedgerState, T]]) -> T:
        path = self._path(organization)
        with FileLock(path.with_name(path.name + ".lock")):
            state = self._read_path(path)
            new_state, result = change(state)
            if new_state != state:
                self._write_path(path, new_state)
        return result

    def read(self, organization: str) -> LedgerState:
        return self._read_path(self._path(organization))

    def _path(self, organization: str) -> Path:
        return self.folder / f"{require_organization_key(organization)}.json"

    @staticmethod
    def _read_path(path: Path) -> LedgerState:
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            return LedgerState()
        return LedgerState.from_json(data, str(path))

    @staticmethod
    def _write_path(path: Path, state: LedgerState) -> None:
        with tempfile.NamedTemporaryFile(dir=path.parent, prefix=path.name, suffix=".tmp", delete=False) as temp:
            temp.write(state.to_json())
            temp.flush()
            os.fsync(temp.fileno())
        os.replace(temp.name, path)


# --- the ledger -------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Reservation:
    slot_at: datetime
    """UTC, when the request may be sent."""
    waited_seconds: float
    """How long reserve() slept before returning."""


@dataclass(frozen=True)
class Admission:
    """A request cleared to leave now: its slot moved to the moment of sending, and what it claimed."""

    sent_at: datetime
    window: ExportWindow
    """The days to request: the caller's choice, given the others' claims."""
    claim: Claim
    waited_seconds: float
    """Extra sleep because another sender left later than its slot."""


@dataclass(frozen=True)
class Usage:
    """The organization's quota as the ledger sees it, for progress reports."""

    used_in_24h: int
    left_in_24h: int
    next_slot: datetime


@dataclass(frozen=True)
class _Moved:
    """Admission found another request due too close: this slot moved to `slot_at`, to be tried again then."""

    slot_at: datetime


_HELD_CLAIMS: Final[set[str]] = set()
"""Owners of the claims this process holds now (admitted, not yet released). A claim of this process whose owner
is not here was left behind by an export that ended: nobody waits for it."""

Decide = Callable[[Sequence[Claim]], ExportWindow | None]
"""Given the live claims of *other* senders, the window to request now, or None when nothing is left to send."""


class RateLedger:
    """Reserve and admit export slots for one organization in a shared store; remember observed export sizes."""

    def __init__(
        self,
        store: LedgerStore,
        *,
        organization: str,
        min_interval: timedelta,
        max_per_day: int,
        max_wait: timedelta,
        guard: timedelta | None = None,
        claim_ttl: timedelta = DEFAULT_CLAIM_TTL,
        clock: Callable[[], datetime] = utc_now,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        _check_limits(min_interval, max_per_day)
        if max_wait < timedelta(0):
            raise ValueError(f"max_wait {max_wait} is negative; use zero (never wait) or more")
        guard = default_guard(min_interval) if guard is None else guard
        if guard < timedelta(0):
            raise ValueError(f"guard {guard} is negative; use zero or more (HATCH_EXPORT_GUARD_SECONDS)")
        self.store = store
        self.organization = require_organization_key(organization)
        self.min_interval = min_interval
        self.guard = guard
        self.max_per_day = max_per_day
        self.max_wait = max_wait
        self.claim_ttl = claim_ttl
        self._clock = clock
        self._sleep = sleep

    def __repr__(self) -> str:
        return (
            f"RateLedger({self.store!r}, organization={self.organization!r}, min_interval={self.min_interval}, "
            f"guard={self.guard}, max_per_day={self.max_per_day}, max_wait={self.max_wait})"
        )

    @property
    def spacing(self) -> timedelta:
        """What the ledger keeps between two requests: the vendor's interval plus the guard band."""
        return self.min_interval + self.guard

    @property
    def rolling_day(self) -> timedelta:
        """The span that holds at most `max_per_day` slots: the vendor's 24 hours plus the guard band, since slots
        are moments of sending and the vendor counts arrivals."""
        return ROLLING_DAY + self.guard

    @property
    def _reach(self) -> timedelta:
        return max(self.spacing, self.rolling_day)

    def reserve(self, not_before: datetime | None = None) -> Reservation:
        """Claim the earliest free slot at or after `not_before` (and the vendor's last Retry-After), sleep until
        it, return it.

        Raises SlotUnavailable, recording nothing, when that slot is more than `max_wait` away. A sleep that ends
        in an exception (the run was stopped) gives the slot back: nothing reached the vendor.
        """

        def claim(state: LedgerState) -> tuple[LedgerState, datetime]:
            now = self._now()
            state = state.pruned(now, self._reach)
            slot = self._earliest(state.slots, now, _later(not_before, state.blocked_until))
            if slot - now > self.max_wait:
                raise SlotUnavailable(opens_at=slot, reason=self._why_waiting(state, now, not_before, slot))
            return state.with_slot(slot), slot

        slot = self.store.update(self.organization, claim)
        delay = max((slot - self._now()).total_seconds(), 0.0)
        if delay > 0:
            with self._given_back_on_error(slot):
                self._sleep(delay)
        return Reservation(slot_at=slot, waited_seconds=delay)

    def admit(self, reservation: Reservation, source: str, decide: Decide, owner: str) -> Admission | None:
        """Clear a reserved request to leave now, or say there is nothing to send.

        `decide` picks the window given the others' live claims; then the moment of sending is taken, and its
        spacing is checked against every other slot already due (sent, or reserved and past: a sender that woke
        late counts from when it really left). When one is too close, this slot moves behind it, we sleep, and
        try again: a move is never taken for "nothing to send", however long the write took. Otherwise the slot
        becomes that moment and the claim (owner `owner`, replacing its earlier one) is stored in the same atomic
        write. When `decide` returns None the slot and `owner`'s claim are given back: nothing reaches the vendor.

        Raises SlotUnavailable when the slot would move beyond `max_wait`; on that or any other error (decide
        failing, the run stopped while waiting) the slot is given back, so the ledger counts only requests sent.
        """
        slot = reservation.slot_at
        waited = 0.0
        while True:
            with self._given_back_on_error(slot):
                outcome = self.store.update(self.organization, partial(self._clear, slot, source, decide, owner))
            if not isinstance(outcome, _Moved):
                break
            slot = outcome.slot_at
            delay = max((slot - self._now()).total_seconds(), 0.0)
            with self._given_back_on_error(slot):
                self._sleep(delay)
            waited += delay
        if isinstance(outcome, SlotUnavailable):
            raise outcome  # its slot is already given back
        return None if outcome is None else replace(outcome, waited_seconds=waited)

    def _clear(
        self, slot: datetime, source: str, decide: Decide, owner: str, state: LedgerState
    ) -> tuple[LedgerState, Admission | _Moved | SlotUnavailable | None]:
        """One atomic step of `admit`: send now, move the slot, refuse, or find nothing to send."""
        state = state.pruned(self._now(), self._reach)
        others = state.without_slot(slot)
        live = [claim for claim in state.claims if claim.owner != owner and claim.is_live(self._now())]
        window = decide(live)
        if window is None:
            return others.without_claim(owner), None
        now = self._now()  # after decide, which may list many objects: that time is not taken from the guard
        due = [other for other in others.slots if other <= now]
        earliest = self._earliest(due, now, state.blocked_until)
        if earliest > now:
            if earliest - now > self.max_wait:
                reason = self._why_waiting(others, now, None, earliest)
                return others, SlotUnavailable(opens_at=earliest, reason=reason)
            return others.with_slot(earliest), _Moved(earliest)
        claim = Claim(source=source, window=window, owner=owner, expires_at=now + self.claim_ttl)
        _HELD_CLAIMS.add(owner)
        admission = Admission(sent_at=now, window=window, claim=claim, waited_seconds=0.0)
        return others.with_slot(now).with_claim(claim), admission

    @contextmanager
    def _given_back_on_error(self, slot: datetime) -> Iterator[None]:
        try:
            yield
        except BaseException:
            self._give_back(slot)
            raise

    def _give_back(self, slot: datetime) -> None:
        """Drop a slot whose request never left (best effort: the error that brought us here is the one to see)."""
        with suppress(Exception):
            self.store.update(self.organization, lambda state: (state.without_slot(slot), None))

    def cancel(self, sent_at: datetime, *, retry_after: datetime | None = None) -> None:
        """Give back a slot whose request the vendor did not count (429), and, given its Retry-After, keep
        everybody sharing the ledger from sending before then."""

        def give_back(state: LedgerState) -> tuple[LedgerState, None]:
            state = state.without_slot(as_utc(sent_at, "sent_at"))
            return (state if retry_after is None else state.blocked(retry_after)), None

        self.store.update(self.organization, give_back)

    def release(self, owner: str) -> None:
        """Drop `owner`'s claim: its ZIP is stored (or the export failed and others may try)."""
        self.store.update(self.organization, lambda state: (state.without_claim(owner), None))
        _HELD_CLAIMS.discard(owner)

    def next_slot(self, not_before: datetime | None = None) -> datetime:
        """Read-only peek at the slot `reserve` would claim now (for `doctor`, `plan` and progress)."""
        now = self._now()
        state = self.store.read(self.organization).pruned(now, self._reach)
        return self._earliest(state.slots, now, _later(not_before, state.blocked_until))

    def usage(self) -> Usage:
        """Exports counted in the last 24 hours, how many are left in that rolling window, and the next slot."""
        now = self._now()
        state = self.store.read(self.organization).pruned(now, self._reach)
        used = sum(now - ROLLING_DAY < slot <= now for slot in state.slots)
        return Usage(
            used_in_24h=used,
            left_in_24h=max(self.max_per_day - len(state.slots), 0),
            next_slot=self._earliest(state.slots, now, state.blocked_until),
        )

    def next_slots(self, count: int) -> list[datetime]:
        """Read-only: the slots `count` back-to-back exports would take if they were reserved now (for `plan`)."""
        now = self._now()
        state = self.store.read(self.organization).pruned(now, self._reach)
        start = max(now, state.blocked_until) if state.blocked_until else now
        return next_slots(
            state.slots,
            count,
            now=start,
            min_interval=self.spacing,
            max_per_day=self.max_per_day,
            rolling=self.rolling_day,
        )

    def record_bytes(self, source: str, window: ExportWindow, uncompressed_bytes: int) -> None:
        """Remember an export's uncompressed size, spread evenly over the window's days."""
        if uncompressed_bytes < 0:
            raise ValueError(f"uncompressed_bytes {uncompressed_bytes} is negative; pass the size of the export")
        per_day = uncompressed_bytes / window.days
        sizes = dict.fromkeys(window.dates(), per_day)

        def remember(state: LedgerState) -> tuple[LedgerState, None]:
            return state.with_bytes(source, sizes).pruned(self._now(), self._reach), None

        self.store.update(self.organization, remember)

    def observed_bytes_per_day(self, source: str) -> dict[date, float]:
        return dict(self.store.read(self.organization).bytes_per_day.get(source, {}))

    def _now(self) -> datetime:
        return as_utc(self._clock(), "clock()")

    def _earliest(self, slots: Sequence[datetime], now: datetime, not_before: datetime | None) -> datetime:
        return earliest_free_slot(
            slots,
            now=now,
            not_before=not_before,
            min_interval=self.spacing,
            max_per_day=self.max_per_day,
            rolling=self.rolling_day,
        )

    def _why_waiting(self, state: LedgerState, now: datetime, not_before: datetime | None, slot: datetime) -> str:
        """Name the limit that pushes the slot out: the caller's not_before, the vendor's Retry-After, the
        interval, or the daily cap."""
        wait = f"more than max_wait ({self.max_wait}) away"
        if not_before is not None and slot == as_utc(not_before, "not_before"):
            return f"the caller asked not to send before {slot.isoformat(timespec='seconds')}, {wait}"
        if state.blocked_until is not None and slot == state.blocked_until:
            return f"the vendor asked (HTTP 429, Retry-After) not to send before {slot.isoformat(timespec='seconds')}"
        if not state.slots:
            return f"nothing may be sent before {slot.isoformat(timespec='seconds')}, {wait}"
        spacing_only = earliest_free_slot(
            state.slots,
            now=now,
            not_before=_later(not_before, state.blocked_until),
            min_interval=self.spacing,
            max_per_day=len(state.slots) + 1,
        )
        if spacing_only == slot:
            return (
                f"the minimum interval of {self.spacing} between exports (guard band included), with "
                f"{len(state.slots)} slot(s) already reserved up to {state.slots[-1].isoformat(timespec='seconds')}, "
                f"puts the next slot {wait}"
            )
        return (
            f"the daily cap of {self.max_per_day} exports in any 24 hours is reached, which puts the next slot {wait}"
        )


def _later(first: datetime | None, second: datetime | None) -> datetime | None:
    present = [as_utc(value, "not_before") for value in (first, second) if value is not None]
    return max(present) if present else None
