"""The rate ledger: the pure slot rule, the state format, RateLedger, and the local-folder store across processes."""

from __future__ import annotations

import multiprocessing
import time
from collections.abc import Callable, Sequence
from datetime import UTC, date, datetime, timedelta
from functools import partial
from itertools import pairwise
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hatch_pipeline.contract import ExportWindow
from hatch_pipeline.export_api.errors import SlotUnavailable
from hatch_pipeline.export_api.ledger import (
    Claim,
    Decide,
    LedgerState,
    LedgerStore,
    LocalLedgerStore,
    RateLedger,
    earliest_free_slot,
    new_owner,
    organization_key,
)

DAY = timedelta(hours=24)
MINUTE = timedelta(minutes=1)
T0 = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)
ORG = organization_key("test-api-key")


def limit_violations(slots: Sequence[datetime], min_interval: timedelta, max_per_day: int) -> list[str]:
    """An independent, brute-force check of both vendor limits over a set of slots."""
    ordered = sorted(slots)
    problems = [f"{a} and {b} are closer than {min_interval}" for a, b in pairwise(ordered) if b - a < min_interval]
    for i, first in enumerate(ordered):
        inside = [slot for slot in ordered[i:] if slot - first < DAY]
        if len(inside) > max_per_day:
            problems.append(f"{len(inside)} slots in the 24 hours from {first}")
    return problems


class FakeClock:
    """Injected time, so waits of minutes or days cost nothing; `sleep` moves the clock like real sleeping would."""

    def __init__(self, now: datetime) -> None:
        self.now = now
        self.slept: list[float] = []

    def __call__(self) -> datetime:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += timedelta(seconds=seconds)


def fake_time_ledger(
    where: Path | LedgerStore,
    *,
    organization: str = ORG,
    min_interval: timedelta = 5 * MINUTE,
    max_per_day: int = 100,
    max_wait: timedelta = DAY,
    guard: timedelta = timedelta(0),
) -> tuple[RateLedger, FakeClock]:
    """A ledger on a local folder (or any store) whose clock only moves when it sleeps (no guard band unless
    asked, so slot arithmetic reads as the vendor's interval)."""
    clock = FakeClock(T0)
    ledger = RateLedger(
        LocalLedgerStore(where) if isinstance(where, Path) else where,
        organization=organization,
        min_interval=min_interval,
        max_per_day=max_per_day,
        max_wait=max_wait,
        guard=guard,
        clock=clock,
        sleep=clock.sleep,
    )
    return ledger, clock


def slot(**offset: float) -> datetime:
    return T0 + timedelta(**offset)


# --- the pure slot rule -----------------------------------------------------------------------------------------


def next_slot(slots: Sequence[datetime], not_before: datetime | None = None, *, cap: int = 100) -> datetime:
    return earliest_free_slot(slots, now=T0, not_before=not_before, min_interval=5 * MINUTE, max_per_day=cap)


def test_an_empty_ledger_gives_now() -> None:
    assert next_slot([]) == T0


def test_not_before_delays_the_slot() -> None:
    assert next_slot([], not_before=slot(minutes=7)) == slot(minutes=7)
    assert next_slot([], not_before=slot(minutes=-7)) == T0


def test_the_next_slot_keeps_the_interval_after_the_last_one() -> None:
    assert next_slot([slot(minutes=-2)]) == slot(minutes=3)
    assert next_slot([slot(minutes=-10)]) == T0


def test_slots_reserved_ahead_by_others_are_respected() -> None:
    assert next_slot([T0, slot(minutes=5), slot(minutes=10)]) == slot(minutes=15)


def test_a_gap_between_future_slots_is_used_when_wide_enough() -> None:
    assert next_slot([slot(minutes=10), slot(minutes=30)]) == T0
    assert next_slot([slot(minutes=3), slot(minutes=20)]) == slot(minutes=8)


def test_a_gap_too_narrow_for_the_interval_is_skipped() -> None:
    assert next_slot([slot(minutes=3), slot(minutes=12)]) == slot(minutes=17)


def test_the_daily_cap_opens_24_hours_after_the_slot_that_falls_out_of_the_window() -> None:
    reserved = [slot(hours=-23), slot(hours=-22), slot(hours=-1)]
    assert next_slot(reserved, cap=3) == slot(hours=1)
    assert next_slot(reserved, cap=4) == T0


def test_the_daily_cap_counts_slots_reserved_in_the_future() -> None:
    # Any slot before now+25h would share a 24-hour window with both future slots.
    assert next_slot([slot(hours=1), slot(hours=2)], cap=2) == slot(hours=25)


def test_naive_datetimes_are_refused() -> None:
    with pytest.raises(ValueError, match="no time zone"):
        earliest_free_slot([], now=datetime(2026, 1, 1), not_before=None, min_interval=MINUTE, max_per_day=1)
    with pytest.raises(ValueError, match="no time zone"):
        next_slot([], not_before=datetime(2026, 1, 1))


def test_limits_that_allow_nothing_are_refused() -> None:
    with pytest.raises(ValueError, match="max_per_day"):
        next_slot([], cap=0)
    with pytest.raises(ValueError, match="min_interval"):
        earliest_free_slot([], now=T0, not_before=None, min_interval=-MINUTE, max_per_day=1)


@settings(deadline=None)
@given(
    interval_minutes=st.integers(0, 180),
    cap=st.integers(1, 6),
    requests=st.lists(
        st.tuples(st.integers(0, 6 * 3600), st.one_of(st.none(), st.integers(0, 30 * 3600))), max_size=25
    ),
)
def test_any_sequence_of_reservations_keeps_both_limits_and_wastes_no_time(
    interval_minutes: int, cap: int, requests: list[tuple[int, int | None]]
) -> None:
    """Requests arrive over time, some asking for a slot far ahead: every answer is allowed and none is late."""
    min_interval = timedelta(minutes=interval_minutes)
    now, slots = T0, list[datetime]()
    for advance, ahead in requests:
        now += timedelta(seconds=advance)
        not_before = None if ahead is None else now + timedelta(seconds=ahead)
        start = max(now, not_before or now)
        chosen = earliest_free_slot(
            sorted(slots), now=now, not_before=not_before, min_interval=min_interval, max_per_day=cap
        )
        assert chosen >= start
        assert limit_violations([*slots, chosen], min_interval, cap) == []
        if chosen > start:
            earlier = chosen - timedelta(microseconds=1)
            assert limit_violations([*slots, earlier], min_interval, cap) != []
        slots.append(chosen)


# --- the stored state -------------------------------------------------------------------------------------------


def test_state_survives_a_json_round_trip() -> None:
    state = LedgerState(slots=(slot(minutes=-5), T0), bytes_per_day={"contact_history": {date(2026, 11, 1): 1234.5}})
    assert LedgerState.from_json(state.to_json(), "memory") == state


def test_a_ledger_of_an_unknown_format_is_refused_with_its_location() -> None:
    with pytest.raises(ValueError, match=r"at /x/ledger\.json.*format 99"):
        LedgerState.from_json(b'{"format": 99, "slots": [], "bytes_per_day": {}}', "/x/ledger.json")


def test_state_refuses_naive_slots() -> None:
    with pytest.raises(ValueError, match="not in UTC"):
        LedgerState(slots=(datetime(2026, 1, 1),))


def test_pruning_drops_slots_older_than_a_day_and_sizes_older_than_400_days() -> None:
    state = LedgerState(
        slots=(slot(hours=-25), slot(hours=-23)),
        bytes_per_day={
            "contact_history": {date(2025, 1, 1): 1.0, date(2026, 11, 1): 2.0},
            "gone": {date(2024, 1, 1): 3.0},
        },
    )
    assert state.pruned(T0) == LedgerState(
        slots=(slot(hours=-23),), bytes_per_day={"contact_history": {date(2026, 11, 1): 2.0}}
    )


# --- RateLedger on the local store ------------------------------------------------------------------------------


def test_reserve_sleeps_until_the_slot_and_says_how_long(tmp_path: Path) -> None:
    ledger, clock = fake_time_ledger(tmp_path)
    first, second = ledger.reserve(), ledger.reserve()
    assert (first.slot_at, first.waited_seconds) == (T0, 0.0)
    assert (second.slot_at, second.waited_seconds) == (slot(minutes=5), 300.0)
    assert clock.now == slot(minutes=5)
    assert ledger.store.read(ORG).slots == (T0, slot(minutes=5))


def test_the_4th_reservation_under_a_cap_of_3_is_refused_naming_the_daily_cap(tmp_path: Path) -> None:
    ledger, _ = fake_time_ledger(tmp_path, max_per_day=3, max_wait=timedelta(hours=1))
    reserved = [ledger.reserve().slot_at for _ in range(3)]
    with pytest.raises(SlotUnavailable, match="daily cap of 3") as refused:
        ledger.reserve()
    assert refused.value.opens_at == reserved[0] + DAY
    assert ledger.store.read(ORG).slots == tuple(reserved)


def test_a_slot_beyond_max_wait_is_refused_naming_the_interval(tmp_path: Path) -> None:
    ledger, clock = fake_time_ledger(tmp_path, max_wait=MINUTE)
    ledger.reserve()
    with pytest.raises(SlotUnavailable, match="minimum interval of 0:05:00") as refused:
        ledger.reserve()
    assert refused.value.opens_at == slot(minutes=5)
    assert clock.slept == []
    assert ledger.store.read(ORG).slots == (T0,)


def test_retry_after_beyond_max_wait_is_refused_naming_it(tmp_path: Path) -> None:
    ledger, _ = fake_time_ledger(tmp_path, max_wait=MINUTE)
    with pytest.raises(SlotUnavailable, match="asked not to send before"):
        ledger.reserve(not_before=slot(hours=1))
    assert ledger.store.read(ORG).slots == ()


def test_next_slot_peeks_without_reserving(tmp_path: Path) -> None:
    ledger, _ = fake_time_ledger(tmp_path)
    ledger.reserve()
    assert ledger.next_slot() == slot(minutes=5)
    assert ledger.next_slot(not_before=slot(hours=2)) == slot(hours=2)
    assert ledger.store.read(ORG).slots == (T0,)


def test_observed_bytes_are_spread_over_the_window_and_the_newest_wins(tmp_path: Path) -> None:
    ledger, _ = fake_time_ledger(tmp_path)
    ledger.record_bytes("contact_history", ExportWindow(date(2026, 11, 1), date(2026, 11, 4)), 4000)
    ledger.record_bytes("contact_history", ExportWindow(date(2026, 11, 4), date(2026, 11, 5)), 100)
    ledger.record_bytes("conversation_items", ExportWindow(date(2026, 11, 1), date(2026, 11, 1)), 7)
    assert ledger.observed_bytes_per_day("contact_history") == {
        date(2026, 11, 1): 1000.0,
        date(2026, 11, 2): 1000.0,
        date(2026, 11, 3): 1000.0,
        date(2026, 11, 4): 50.0,
        date(2026, 11, 5): 50.0,
    }
    assert ledger.observed_bytes_per_day("conversation_items") == {date(2026, 11, 1): 7.0}
    assert ledger.observed_bytes_per_day("never_seen") == {}


def test_the_ledger_file_is_named_by_the_key_hash_and_never_holds_the_key(tmp_path: Path) -> None:
    api_key = "hk_live_very_secret_key"
    ledger, _ = fake_time_ledger(tmp_path, organization=organization_key(api_key))
    ledger.reserve()
    ledger.record_bytes("contact_history", ExportWindow(date(2026, 11, 1), date(2026, 11, 1)), 10)
    files = sorted(path.name for path in tmp_path.iterdir())
    assert files == [f"{organization_key(api_key)}.json", f"{organization_key(api_key)}.json.lock"]
    assert all(api_key not in path.read_text() for path in tmp_path.iterdir())
    assert api_key not in repr(ledger)


def test_the_raw_api_key_is_refused_as_an_organization(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="never the API key itself"):
        RateLedger(
            LocalLedgerStore(tmp_path), organization="hk_live_key", min_interval=MINUTE, max_per_day=1, max_wait=DAY
        )


# --- admission: spacing from the moment of sending, 429s, claims ------------------------------------------------

WINDOW = ExportWindow(date(2026, 11, 1), date(2026, 11, 3))
OWNER = "somewhere-else/1/a"


def send_whole(window: ExportWindow) -> Decide:
    return lambda claims: window


def test_the_default_guard_band_is_a_share_of_the_interval(tmp_path: Path) -> None:
    clock = FakeClock(T0)
    ledger = RateLedger(
        LocalLedgerStore(tmp_path),
        organization=ORG,
        min_interval=5 * MINUTE,
        max_per_day=100,
        max_wait=DAY,
        clock=clock,
        sleep=clock.sleep,
    )
    assert ledger.guard == timedelta(seconds=3)
    ledger.reserve()
    assert ledger.next_slot() == slot(minutes=5, seconds=3)


def test_a_sender_that_leaves_late_pushes_the_next_one_back(tmp_path: Path) -> None:
    ledger, clock = fake_time_ledger(tmp_path, guard=timedelta(seconds=2))
    late, next_one = ledger.reserve(), ledger.reserve()
    assert next_one.slot_at == slot(minutes=5, seconds=2)
    clock.now = slot(minutes=1)  # the first sender woke a minute late
    first = ledger.admit(late, "contact_history", send_whole(WINDOW), owner=OWNER)
    clock.now = next_one.slot_at

    second = ledger.admit(next_one, "conversation_items", send_whole(WINDOW), owner="here/1/b")

    assert first is not None and second is not None
    assert first.sent_at == slot(minutes=1)
    assert second.sent_at == slot(minutes=6, seconds=2)
    assert second.waited_seconds == 60.0
    assert ledger.store.read(ORG).slots == (first.sent_at, second.sent_at)


def test_nothing_to_send_gives_the_slot_back(tmp_path: Path) -> None:
    ledger, _ = fake_time_ledger(tmp_path)
    reservation = ledger.reserve()

    assert ledger.admit(reservation, "contact_history", lambda claims: None, owner=OWNER) is None

    assert ledger.store.read(ORG).slots == ()
    assert ledger.next_slot() == T0


def test_a_429_gives_the_slot_back_and_holds_everybody_until_its_retry_after(tmp_path: Path) -> None:
    ledger, _ = fake_time_ledger(tmp_path)
    admitted = ledger.admit(ledger.reserve(), "contact_history", send_whole(WINDOW), owner=OWNER)
    assert admitted is not None

    ledger.cancel(admitted.sent_at, retry_after=slot(minutes=20))

    assert ledger.store.read(ORG).slots == ()
    assert ledger.next_slot() == slot(minutes=20)
    other, _ = fake_time_ledger(tmp_path)
    assert other.reserve().slot_at == slot(minutes=20)


def test_decide_sees_the_live_claims_of_others_only(tmp_path: Path) -> None:
    ledger, clock = fake_time_ledger(tmp_path)
    seen: list[list[Claim]] = []

    def decide(claims: Sequence[Claim]) -> ExportWindow:
        seen.append(list(claims))
        return WINDOW

    ledger.admit(ledger.reserve(), "contact_history", decide, owner=OWNER)
    ledger.admit(ledger.reserve(), "contact_history", decide, owner=OWNER)  # its own claim: not "another's"
    ledger.admit(ledger.reserve(), "contact_history", decide, owner="here/1/b")
    clock.now += ledger.claim_ttl
    ledger.admit(ledger.reserve(), "contact_history", decide, owner="here/1/c")

    assert [[claim.owner for claim in claims] for claims in seen] == [[], [], [OWNER], []]
    assert [claim.owner for claim in stored_claims(ledger)] == ["here/1/c"]


def test_a_claim_of_a_process_of_this_machine_that_died_lapses_at_once() -> None:
    dead = multiprocessing.get_context("spawn").Process(target=int)
    dead.start()
    dead.join()
    claim = Claim("contact_history", WINDOW, owner=f"{new_owner().split('/')[0]}/{dead.pid}/x", expires_at=T0 + DAY)
    assert not claim.is_live(T0)
    assert Claim("contact_history", WINDOW, owner=f"other-host/{dead.pid}/x", expires_at=T0 + DAY).is_live(T0)


def test_a_claim_of_this_process_lives_only_while_its_export_holds_it(tmp_path: Path) -> None:
    ledger, _ = fake_time_ledger(tmp_path)
    owner = new_owner()
    admitted = ledger.admit(ledger.reserve(), "contact_history", send_whole(WINDOW), owner=owner)
    assert admitted is not None and admitted.claim.is_live(T0)

    ledger.release(owner)

    assert not admitted.claim.is_live(T0)  # a claim of ours left behind is never waited for
    never_admitted = Claim("contact_history", WINDOW, owner=new_owner(), expires_at=T0 + DAY)
    assert not never_admitted.is_live(T0)


def test_releasing_a_claim_lets_others_take_the_days(tmp_path: Path) -> None:
    ledger, _ = fake_time_ledger(tmp_path)
    ledger.admit(ledger.reserve(), "contact_history", send_whole(WINDOW), owner=OWNER)
    ledger.release(OWNER)
    assert stored_claims(ledger) == []


def test_a_format_1_ledger_is_read_with_no_block_and_no_claims() -> None:
    state = LedgerState.from_json(b'{"format": 1, "slots": ["2026-11-20T12:00:00+00:00"], "bytes_per_day": {}}', "x")
    assert state == LedgerState(slots=(T0,))


def test_usage_counts_the_last_24_hours(tmp_path: Path) -> None:
    ledger, _ = fake_time_ledger(tmp_path, max_per_day=3)
    ledger.reserve()
    ledger.reserve()
    usage = ledger.usage()
    assert (usage.used_in_24h, usage.left_in_24h, usage.next_slot) == (2, 1, slot(minutes=10))


# --- several processes against one store ------------------------------------------------------------------------

PROCESSES = 4
RESERVATIONS_EACH = 5
REAL_INTERVAL = timedelta(milliseconds=50)


def reserve_in_child(make_store: Callable[[], LedgerStore], start: Any, results: Any) -> None:
    """Runs in a spawned process: build its own store, wait for the others, then reserve with the real clock."""
    ledger = RateLedger(make_store(), organization=ORG, min_interval=REAL_INTERVAL, max_per_day=1000, max_wait=MINUTE)
    start.wait()
    for _ in range(RESERVATIONS_EACH):
        results.put(ledger.reserve().slot_at)


def reserve_from_processes(make_store: Callable[[], LedgerStore]) -> list[datetime]:
    """All slots granted to PROCESSES processes reserving at the same moment through their own stores."""
    context = multiprocessing.get_context("spawn")
    start, results = context.Barrier(PROCESSES), context.Queue()
    children = [context.Process(target=reserve_in_child, args=(make_store, start, results)) for _ in range(PROCESSES)]
    for child in children:
        child.start()
    try:
        granted = [results.get(timeout=60) for _ in range(PROCESSES * RESERVATIONS_EACH)]
    finally:
        for child in children:
            child.join(timeout=30)
    assert [child.exitcode for child in children] == [0] * PROCESSES
    return granted


def assert_no_reservation_lost(granted: list[datetime], stored: LedgerState) -> None:
    assert len(set(granted)) == PROCESSES * RESERVATIONS_EACH
    assert stored.slots == tuple(sorted(granted))
    assert limit_violations(granted, REAL_INTERVAL, 1000) == []


def test_processes_sharing_a_folder_never_break_the_limits(tmp_path: Path) -> None:
    granted = reserve_from_processes(partial(LocalLedgerStore, tmp_path))
    assert_no_reservation_lost(granted, LocalLedgerStore(tmp_path).read(ORG))


def stored_claims(ledger: RateLedger) -> list[Claim]:
    """The claims the ledger object holds now, as any other process would read them."""
    return list(ledger.store.read(ledger.organization).claims)


# --- admission never confuses a move with "nothing to send", and leaves no phantom slot --------------------------


class SlowWrites:
    """A real local store whose writes take `seconds` (a GCS write on a busy day): the fault the stall came from."""

    def __init__(self, folder: Path, seconds: float) -> None:
        self.inner = LocalLedgerStore(folder)
        self.seconds = seconds

    def update(self, organization: str, change: Callable[[LedgerState], tuple[LedgerState, Any]]) -> Any:
        def change_then_write_slowly(state: LedgerState) -> tuple[LedgerState, Any]:
            result = change(state)
            time.sleep(self.seconds)
            return result

        return self.inner.update(organization, change_then_write_slowly)

    def read(self, organization: str) -> LedgerState:
        return self.inner.read(organization)


def test_a_slot_moved_by_less_than_a_slow_write_takes_is_still_admitted(tmp_path: Path) -> None:
    """Another sender left 20 ms too recently; the move is 20 ms, the write 50 ms. The old admit took "the moved slot
    is already past" for "nothing to send", left its claim and slot behind, and its export waited for itself."""
    interval = timedelta(seconds=1)
    store = SlowWrites(tmp_path, seconds=0.05)
    ledger = RateLedger(
        store, organization=ORG, min_interval=interval, max_per_day=100, max_wait=DAY, guard=timedelta(0)
    )
    ours = ledger.reserve()
    other_sent = datetime.now(UTC) - interval + timedelta(milliseconds=20)
    store.inner.update(ORG, lambda state: (state.with_slot(other_sent), None))  # written fast, just now

    admitted = ledger.admit(ours, "contact_history", send_whole(WINDOW), owner=OWNER)

    assert admitted is not None, "a move was taken for nothing to send"
    assert admitted.sent_at - other_sent >= interval
    assert store.read(ORG).slots == (other_sent, admitted.sent_at)
    assert [claim.owner for claim in store.read(ORG).claims] == [OWNER]


def test_an_admission_refused_after_anothers_retry_after_gives_its_slot_back(tmp_path: Path) -> None:
    ledger, _ = fake_time_ledger(tmp_path, max_wait=10 * MINUTE)
    ours = ledger.reserve()
    ledger.store.update(ORG, lambda state: (state.blocked(slot(hours=2)), None))  # another sender met a 429

    with pytest.raises(SlotUnavailable, match="Retry-After"):
        ledger.admit(ours, "contact_history", send_whole(WINDOW), owner=OWNER)

    assert ledger.store.read(ORG).slots == ()
    assert stored_claims(ledger) == []


def test_a_decide_that_fails_gives_the_slot_back(tmp_path: Path) -> None:
    ledger, _ = fake_time_ledger(tmp_path)

    def listing_fails(claims: Sequence[Claim]) -> ExportWindow:
        raise ConnectionError("the object store did not answer the listing")

    with pytest.raises(ConnectionError):
        ledger.admit(ledger.reserve(), "contact_history", listing_fails, owner=OWNER)

    assert ledger.store.read(ORG).slots == ()


def test_a_sleep_cut_short_gives_the_reserved_slot_back(tmp_path: Path) -> None:
    ledger, _ = fake_time_ledger(tmp_path)
    ledger.reserve()

    def interrupted(seconds: float) -> None:
        raise KeyboardInterrupt  # the run was stopped while this sender waited for its slot

    stopped = RateLedger(
        ledger.store,
        organization=ORG,
        min_interval=5 * MINUTE,
        max_per_day=100,
        max_wait=DAY,
        guard=timedelta(0),
        clock=lambda: T0,
        sleep=interrupted,
    )
    with pytest.raises(KeyboardInterrupt):
        stopped.reserve()

    assert ledger.store.read(ORG).slots == (T0,)


def test_the_moment_of_sending_is_taken_after_decide(tmp_path: Path) -> None:
    ledger, clock = fake_time_ledger(tmp_path)

    def slow_listing(claims: Sequence[Claim]) -> ExportWindow:
        clock.now += timedelta(seconds=7)  # listing every stored manifest of the source
        return WINDOW

    admitted = ledger.admit(ledger.reserve(), "contact_history", slow_listing, owner=OWNER)

    assert admitted is not None and admitted.sent_at == slot(seconds=7)
    assert ledger.store.read(ORG).slots == (slot(seconds=7),)


def test_the_daily_cap_carries_the_guard_band_too(tmp_path: Path) -> None:
    ledger, _ = fake_time_ledger(tmp_path, max_per_day=3, guard=timedelta(seconds=2))
    granted = [ledger.reserve().slot_at for _ in range(4)]
    assert granted[3] == T0 + DAY + timedelta(seconds=2)
