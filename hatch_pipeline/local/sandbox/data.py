"""Deterministic, realistic synthetic rows for the sandbox, and the data file one export holds.

Why synthetic data looks like this: the pipeline must survive what the real export throws at it, so the rows
carry IDs with leading zeros (a numeric parse corrupts them), free text with commas, quotes, newlines and emoji
(CSV quoting must round-trip), nulls, rows seconds from midnight (day bucketing must be exact), and contact_history
columns that only appear from a configured day on (schema evolution).

Rows are a pure function of (seed, source, day, row index): every day draws from its own random stream, so a day's
rows are identical whichever window asks for them, on every run, in JSON and in CSV. The organization only fills
organization_id and organization_name, so every organization sees the same rows under its own name.
Every non-empty day holds exactly `rows_per_day` rows per source (no random variation), so tests and benchmarks
can predict counts: `row_count(window, config)`.
"""

from __future__ import annotations

import csv
import io
import json
import random
import uuid
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import date, timedelta
from functools import lru_cache
from typing import Final

from hatch_pipeline.contract import DataSource, ExportWindow, OutputFormat
from hatch_pipeline.schemas import CONTACT_HISTORY, CONVERSATION_ITEMS

DEFAULT_API_KEY: Final = "sandbox-key"
DEFAULT_ORGANIZATION_ID: Final = "org-sandbox"

CONTACT_HISTORY_COLUMNS: Final = tuple(CONTACT_HISTORY.columns)
"""The documented columns, in the vendor's order (schemas.py is where the project writes them down)."""
NEW_CONTACT_HISTORY_COLUMNS: Final = ("external_contact_id", "appointment_id", "invoice_id")
"""Rolled out over time by the vendor: present only on days from `SandboxConfig.new_columns_from` on."""

CONVERSATION_ITEMS_COLUMNS: Final = tuple(CONVERSATION_ITEMS.columns)

EDGE_BODIES: Final = (
    "",
    None,
    "line\u2028separator, paragraph\u2029separator, a tab\t and a bell \u0007",
    'Ünïcödé ✓ 🙂 — 日本語, "quoted"\r\nand a CRLF',
    "a long email body " * 20_000,
)
"""conversation_items bodies of each day's first rows when `SandboxConfig.edge_values` is on: "" beside null, the
unicode line and paragraph separators, quotes and line breaks, a 360 kB body (Python's csv limit is 128 kB)."""
_BOM: Final = "\ufeff"

EDGE_ROWS_PER_DAY: Final = 4
"""Rows per day placed within three seconds of midnight, alternately just after the start and before the end."""

_MS_PER_DAY: Final = 86_400_000
_EDGE_MS: Final = 3_000


def _default_api_keys() -> dict[str, str]:
    return {DEFAULT_API_KEY: DEFAULT_ORGANIZATION_ID}


@dataclass(frozen=True)
class SandboxConfig:
    """Everything the sandbox server and its data depend on; replace fields with `dataclasses.replace`."""

    api_keys: Mapping[str, str] = field(default_factory=_default_api_keys, repr=False)
    """API key -> organization id. Several keys may share an organization (and so its rate limits)."""
    today: date | None = None
    """The server's idea of today for the date rules; None means today's UTC date at request time."""
    rows_per_day: int = 50
    """Exact number of rows each source holds on each day that is not in `empty_days`."""
    new_columns_from: date | None = None
    """First day whose contact_history rows carry NEW_CONTACT_HISTORY_COLUMNS; None means never."""
    empty_days: frozenset[date] = frozenset()
    extra_columns: tuple[str, ...] = ()
    """Text columns the vendor added under any name (e.g. SQL's reserved words `from`, `end`), on every row of both
    sources after all others."""
    min_export_interval_seconds: float = 0.0
    max_exports_per_day: int = 100
    send_retry_after: bool = True
    max_payload_bytes: int = 100_000_000
    """Largest uncompressed data file the server sends; bigger exports are answered 413."""
    seed: int = 0
    edge_values: bool = False
    """Values a faithful pipeline must keep: conversation_items bodies from EDGE_BODIES on each day's first rows,
    contact_history emails "" on each day's first row, and CSV files that start with a UTF-8 byte-order mark."""

    def __post_init__(self) -> None:
        if self.rows_per_day < 0:
            raise ValueError(f"rows_per_day must be zero or more, got {self.rows_per_day}")
        if self.min_export_interval_seconds < 0:
            raise ValueError("min_export_interval_seconds must be zero or more")
        if self.max_exports_per_day < 1:
            raise ValueError("max_exports_per_day must be at least 1")
        if self.max_payload_bytes < 1:
            raise ValueError("max_payload_bytes must be at least 1")


def has_new_columns(day: date, config: SandboxConfig) -> bool:
    return config.new_columns_from is not None and day >= config.new_columns_from


def columns_for(source: DataSource, window: ExportWindow, config: SandboxConfig) -> tuple[str, ...]:
    """The CSV header of an export: the rolled-out columns appear once any day of the window has them."""
    if source == "conversation_items":
        return CONVERSATION_ITEMS_COLUMNS + config.extra_columns
    if has_new_columns(window.end, config):
        return CONTACT_HISTORY_COLUMNS + NEW_CONTACT_HISTORY_COLUMNS + config.extra_columns
    return CONTACT_HISTORY_COLUMNS + config.extra_columns


def rows_on_day(day: date, config: SandboxConfig) -> int:
    return 0 if day in config.empty_days else config.rows_per_day


def row_count(window: ExportWindow, config: SandboxConfig) -> int:
    """Rows one source holds over the window (the same for both sources)."""
    return sum(rows_on_day(day, config) for day in window.dates())


def rows_for_day(
    source: DataSource, day: date, config: SandboxConfig, organization_id: str = DEFAULT_ORGANIZATION_ID
) -> Iterator[dict[str, object]]:
    """The rows of `source` whose date column (contact_history: updated_at, conversation_items: created_at)
    falls on `day` in UTC, in time order, with keys in column order."""
    count = rows_on_day(day, config)
    if count == 0:
        return iter(())
    rng = random.Random(f"{config.seed}:{source}:{day.isoformat()}")
    offsets = _offsets_in_day(rng, count)
    catalog = _catalog(config.seed, organization_id)
    if source == "contact_history":
        rows = _contact_history_rows(rng, day, offsets, catalog, has_new_columns(day, config))
        edges: Iterator[dict[str, object]] = iter([{"email": ""}])
    else:
        rows = _conversation_items_rows(rng, day, offsets, catalog)
        edges = ({"body": body} for body in EDGE_BODIES)
    if config.extra_columns:
        rows = (
            row | {name: f"{name} {day} {index}" for name in config.extra_columns} for index, row in enumerate(rows)
        )
    if not config.edge_values:
        return rows
    return (row | next(edges, {}) for row in rows)


def render_export(
    source: DataSource,
    window: ExportWindow,
    output_format: OutputFormat,
    config: SandboxConfig,
    organization_id: str = DEFAULT_ORGANIZATION_ID,
) -> Iterator[bytes]:
    """The uncompressed data file of one export, in UTF-8 chunks (one per day, plus the CSV header first).

    json: newline-delimited JSON objects. csv: RFC 4180 with CRLF line ends, minimal quoting, null and "" both as
    an empty field (as Python's csv module writes them), booleans as true/false. Only `edge_values` puts empty
    strings (and a byte-order mark before the CSV header) in the data.
    """
    if output_format == "csv":
        columns = columns_for(source, window, config)
        yield ((_BOM if config.edge_values else "") + _csv_text([columns])).encode()
        for day in window.dates():
            rows = rows_for_day(source, day, config, organization_id)
            block = _csv_text([_csv_cell(row.get(column)) for column in columns] for row in rows)
            if block:
                yield block.encode()
    else:
        for day in window.dates():
            block = "".join(_json_line(row) for row in rows_for_day(source, day, config, organization_id))
            if block:
                yield block.encode()


def _json_line(row: Mapping[str, object]) -> str:
    return json.dumps(row, ensure_ascii=False, separators=(",", ":")) + "\n"


def _csv_cell(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _csv_text(records: Iterable[Iterable[str]]) -> str:
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\r\n").writerows(records)
    return buffer.getvalue()


def timestamp(day: date, ms_after_midnight: int) -> str:
    """ISO-8601 UTC with milliseconds and Z, e.g. 2026-11-20T23:59:58.123Z (offsets past midnight roll over)."""
    days, ms = divmod(ms_after_midnight, _MS_PER_DAY)
    seconds, millis = divmod(ms, 1000)
    minutes, seconds = divmod(seconds, 60)
    hours, minutes = divmod(minutes, 60)
    return f"{(day + timedelta(days=days)).isoformat()}T{hours:02d}:{minutes:02d}:{seconds:02d}.{millis:03d}Z"


def _offsets_in_day(rng: random.Random, count: int) -> list[int]:
    """Milliseconds after midnight, sorted; the first EDGE_ROWS_PER_DAY hug midnight on either side."""
    offsets = []
    for index in range(count):
        if index < EDGE_ROWS_PER_DAY:
            near = rng.randrange(_EDGE_MS)
            offsets.append(near if index % 2 == 0 else _MS_PER_DAY - 1 - near)
        else:
            offsets.append(rng.randrange(_MS_PER_DAY))
    offsets.sort()
    return offsets


def _uuid(rng: random.Random) -> str:
    return str(uuid.UUID(int=rng.getrandbits(128), version=4))


def _digits(rng: random.Random, width: int) -> str:
    """A digit-string ID, zero-padded: most carry leading zeros that a numeric parse would drop."""
    return f"{rng.randrange(10**width // 3):0{width}d}"


@dataclass(frozen=True)
class _Contact:
    id: str
    email: str | None
    phone: str | None
    lead_source: str | None


@dataclass(frozen=True)
class _Catalog:
    """The slowly-changing things rows point at, fixed per seed so IDs recur across days."""

    organization_id: str
    organization_name: str
    workspaces: tuple[tuple[str, str], ...]
    campaigns: tuple[tuple[str, str], ...]
    contacts: tuple[_Contact, ...]
    users: tuple[str, ...]


_WORKSPACE_NAMES: Final = (
    "Main Street Roofing",
    'O\'Neil HVAC, Inc. "North"',
    "Café Plumbing & Heating",
    "Zürich Windows — East",
)
_CAMPAIGN_NAMES: Final = (
    "Spring Tune-Up 🌸",
    "Web Leads — Follow Up",
    "Reactivation, 2026",
    '"Free Estimate" Blast',
    "Angi Leads",
    "Missed Call Text Back",
    "Quote Follow-Up",
    "Review Request ⭐",
)
_LEAD_SOURCES: Final = ("Website", "Facebook Lead Ads", "Angi", "Google LSA", "Referral", "Thumbtack", None)
_FIRST_NAMES: Final = ("José", "Zoë", "Łukasz", "Aiko", "Mary-Jane", "Siobhán", "Mohammed", "Chen", "Ana", "Olu")
_EMAIL_NAMES: Final = ("jose", "zoe", "lukasz", "aiko", "maryjane", "siobhan", "mohammed", "chen", "ana", "olu")
_STATUSES: Final = ("In Progress", "No Reply", "Replied", "Canceled")
_STAGES: Final = ("New Lead", "Follow Up 1", "Follow Up 2", "Appointment Set", "Closed Won", "Closed Lost")
_TEXT_FRAGMENTS: Final = (
    "Hi {name}, thanks for reaching out!",
    "Can you come by Tuesday, around 3pm?",
    'She said "the leak is back" again.',
    "The quote was $1,250.00, is that still right?",
    "Gracias — nos vemos mañana 👍",
    "Appointment confirmed ✅ see you soon",
    "Ça marche, merci beaucoup !",
    "Reply STOP to opt out.",
    "水漏れの件でご連絡しました。",
    'Address: 12 O\'Connell St, Apt "B"',
    "Line one\nline two",
    "🔥🔥 Limited offer, 20% off",
)
_EMAIL_SIGNATURE: Final = "\r\n\r\n-- \r\nThe Service Team\r\n(415) 555-0100, ext. 7"


@lru_cache(maxsize=16)
def _catalog(seed: int, organization_id: str) -> _Catalog:
    rng = random.Random(f"{seed}:catalog")
    contacts = []
    for _ in range(2_000):
        name_index = rng.randrange(len(_EMAIL_NAMES))
        email = None if rng.random() < 0.1 else f"{_EMAIL_NAMES[name_index]}.{rng.randrange(10_000)}@example.com"
        contacts.append(_Contact(_digits(rng, 9), email, _phone(rng), rng.choice(_LEAD_SOURCES)))
    return _Catalog(
        organization_id=organization_id,
        organization_name=organization_id.replace("-", " ").replace("_", " ").title(),
        workspaces=tuple((_digits(rng, 6), name) for name in _WORKSPACE_NAMES),
        campaigns=tuple((_uuid(rng), name) for name in _CAMPAIGN_NAMES),
        contacts=tuple(contacts),
        users=tuple(_digits(rng, 7) for _ in range(12)),
    )


def _phone(rng: random.Random) -> str | None:
    """E.164 most of the time; sometimes the national form with its leading zero; sometimes missing."""
    draw = rng.random()
    number = f"{rng.randrange(200, 1000)}555{rng.randrange(10_000):04d}"
    if draw < 0.1:
        return None
    if draw < 0.25:
        return f"0{number}"
    return f"+1{number}"


def _contact_history_rows(
    rng: random.Random, day: date, offsets: list[int], catalog: _Catalog, with_new_columns: bool
) -> Iterator[dict[str, object]]:
    for offset in offsets:
        workspace_id, workspace_name = rng.choice(catalog.workspaces)
        campaign_id, campaign_name = rng.choice(catalog.campaigns)
        contact = rng.choice(catalog.contacts)
        row: dict[str, object] = {
            "organization_id": catalog.organization_id,
            "organization_name": catalog.organization_name,
            "workspace_id": workspace_id,
            "workspace_name": workspace_name,
            "contact_history_id": _uuid(rng),
            "campaign_id": campaign_id,
            "campaign_name": campaign_name,
            "current_lead_source": contact.lead_source,
            "hatch_contact_id": contact.id,
            "contact_status": rng.choice(_STATUSES),
            "campaign_stage": rng.choice(_STAGES),
            "sales_value": round(rng.uniform(49, 25_000), 2) if rng.random() < 0.4 else None,
            "opted_out": rng.random() < 0.05,
            "email": contact.email,
            "phone": contact.phone,
            "updated_at": timestamp(day, offset),
        }
        # Drawn on every day so that switching the columns on changes no other value.
        rolled_out: dict[str, object] = {
            "external_contact_id": _digits(rng, 8) if rng.random() < 0.15 else None,
            "appointment_id": _uuid(rng) if rng.random() < 0.1 else None,
            "invoice_id": f"INV-{_digits(rng, 6)}" if rng.random() < 0.05 else None,
        }
        if with_new_columns:
            row.update(rolled_out)
        yield row


def _conversation_items_rows(
    rng: random.Random, day: date, offsets: list[int], catalog: _Catalog
) -> Iterator[dict[str, object]]:
    for offset in offsets:
        workspace_id, workspace_name = rng.choice(catalog.workspaces)
        contact = rng.choice(catalog.contacts)
        category = _category(rng.random())
        direction = "inbound" if rng.random() < 0.45 else "outbound"
        actor_type = "contact" if direction == "inbound" else rng.choice(("user", "automation"))
        actor_id = {"contact": contact.id, "user": rng.choice(catalog.users), "automation": None}[actor_type]
        edited_after_ms = 0 if rng.random() < 0.5 else rng.randrange(1, 600_000)
        yield {
            "organization_id": catalog.organization_id,
            "organization_name": catalog.organization_name,
            "workspace_id": workspace_id,
            "workspace_name": workspace_name,
            "id": _digits(rng, 12),
            "conversation_id": _uuid(rng),
            "contact_id": contact.id,
            "actor_type": actor_type,
            "actor_id": actor_id,
            "category": category,
            "type": _message_type(rng, category),
            "direction": direction,
            "body": _body(rng, category),
            "delivery_status": _delivery_status(rng, category, direction),
            "created_at": timestamp(day, offset),
            "updated_at": timestamp(day, offset + edited_after_ms),
        }


def _category(draw: float) -> str:
    if draw < 0.6:
        return "sms"
    return "email" if draw < 0.85 else "call"


def _message_type(rng: random.Random, category: str) -> str:
    if category == "sms":
        return "mms" if rng.random() < 0.1 else "text"
    if category == "call":
        return "voicemail" if rng.random() < 0.3 else "voice_call"
    return "email"


def _body(rng: random.Random, category: str) -> str | None:
    """Free text as people write it: unicode, emoji, commas, quotes and newlines; calls mostly have none."""
    if category == "call":
        return f"Voicemail transcript: {rng.choice(_TEXT_FRAGMENTS)}" if rng.random() < 0.3 else None
    if rng.random() < 0.05:
        return None
    parts = [rng.choice(_TEXT_FRAGMENTS) for _ in range(rng.randrange(1, 4))]
    text = (" " if category == "sms" else "\r\n").join(parts).replace("{name}", rng.choice(_FIRST_NAMES))
    return text + _EMAIL_SIGNATURE if category == "email" else text


def _delivery_status(rng: random.Random, category: str, direction: str) -> str | None:
    if category == "call":
        return rng.choice(("completed", "no-answer", "busy"))
    if direction == "inbound":
        return "received"
    if category == "email":
        return rng.choice(("delivered", "delivered", "opened", "bounced"))
    return rng.choice(("delivered", "delivered", "delivered", "sent", "failed", "undelivered", None))
