"""The columns Hatch documents for each data source, with the types we give them.

The vendor publishes column names but no types. We type only what the names promise (timestamps, a flag, a
money amount) and keep everything else, ids and phone numbers included, as text: inference would turn an id
like "00123" into the number 123 and lose it. Columns the vendor adds later are kept as text by the parser.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Final

import polars as pl

from hatch_pipeline.contract import DataSource

TIMESTAMP: Final = pl.Datetime("us", "UTC")

LINEAGE_COLUMNS: Final = ("_export_date", "_source_file", "_loaded_at")
"""Added to every row: the day it belongs to, the gs:// URI of the stored ZIP, and when it was parsed."""

HIVE_KEY: Final = "export_date"
"""The key of the Parquet folders (`export_date=YYYY-MM-DD/`); BigQuery's hive-partitioned load adds it as a column,
so no vendor column may take its name."""


@dataclass(frozen=True)
class SourceSchema:
    """One data source: its documented columns in the vendor's order, its natural id and its default date column."""

    source: DataSource
    natural_id: str
    date_column: str
    columns: Mapping[str, pl.DataType]

    @property
    def timestamp_columns(self) -> tuple[str, ...]:
        """The columns a caller may choose as the date column: the documented timestamps."""
        return tuple(name for name, dtype in self.columns.items() if dtype == TIMESTAMP)


def _text(*names: str) -> dict[str, pl.DataType]:
    return dict.fromkeys(names, pl.String())


_WORKSPACE_COLUMNS: Final = ("organization_id", "organization_name", "workspace_id", "workspace_name")

CONTACT_HISTORY: Final = SourceSchema(
    source="contact_history",
    natural_id="contact_history_id",
    date_column="updated_at",
    columns=MappingProxyType(
        {
            **_text(
                *_WORKSPACE_COLUMNS,
                "contact_history_id",
                "campaign_id",
                "campaign_name",
                "current_lead_source",
                "hatch_contact_id",
                "contact_status",
                "campaign_stage",
            ),
            "sales_value": pl.Float64(),
            "opted_out": pl.Boolean(),
            **_text("email", "phone"),
            "updated_at": TIMESTAMP,
            # external_contact_id, appointment_id and invoice_id are being rolled out by the vendor. They are
            # left out on purpose: like any column the vendor adds, they are kept as text from the first export
            # that carries them, and the BigQuery table gains them then (ALTER TABLE ADD COLUMN).
        }
    ),
)

CONVERSATION_ITEMS: Final = SourceSchema(
    source="conversation_items",
    natural_id="id",
    date_column="created_at",
    columns=MappingProxyType(
        {
            **_text(
                *_WORKSPACE_COLUMNS,
                "id",
                "conversation_id",
                "contact_id",
                "actor_type",
                "actor_id",
                "category",
                "type",
                "direction",
                "body",
                "delivery_status",
            ),
            "created_at": TIMESTAMP,
            "updated_at": TIMESTAMP,
        }
    ),
)

SCHEMAS: Final[Mapping[DataSource, SourceSchema]] = MappingProxyType(
    {schema.source: schema for schema in (CONTACT_HISTORY, CONVERSATION_ITEMS)}
)

LINEAGE_DTYPES: Final[Mapping[str, pl.DataType]] = MappingProxyType(
    {"_export_date": pl.Date(), "_source_file": pl.String(), "_loaded_at": TIMESTAMP}
)


COLUMN_DESCRIPTIONS: Final[Mapping[str, str]] = MappingProxyType(
    {
        "organization_id": "Hatch organization the record belongs to.",
        "organization_name": "Name of that organization.",
        "workspace_id": "Hatch workspace within the organization.",
        "workspace_name": "Name of that workspace.",
        "contact_history_id": "Identifier of this contact-history record (the natural id; one row per version).",
        "campaign_id": "Campaign the contact is enrolled in.",
        "campaign_name": "Name of that campaign.",
        "current_lead_source": "Where the lead came from, as last set.",
        "hatch_contact_id": "Hatch's identifier of the contact.",
        "contact_status": "Status of the contact in the campaign.",
        "campaign_stage": "Stage of the contact in the campaign.",
        "sales_value": "Sales value attributed to the contact (money, as the vendor sent it).",
        "opted_out": "Whether the contact opted out of messages.",
        "email": "Contact's email address, as the vendor sent it.",
        "phone": "Contact's phone number, kept as text (leading zeros and + preserved).",
        "updated_at": "When the record last changed at Hatch (UTC).",
        "id": "Identifier of this conversation item (the natural id; one row per version).",
        "conversation_id": "Conversation the item belongs to.",
        "contact_id": "Contact the conversation is with.",
        "actor_type": "Who acted: contact, user, AI agent or system, as the vendor names it.",
        "actor_id": "Identifier of that actor.",
        "category": "Kind of item, as the vendor categorizes it.",
        "type": "Type of item (message, call, note, ...), as the vendor names it.",
        "direction": "Inbound or outbound.",
        "body": "Text of the item, as the vendor sent it.",
        "delivery_status": "Delivery status of an outbound message.",
        "created_at": "When the item was created at Hatch (UTC).",
        "_export_date": "Lineage: the day (in HATCH_TIMEZONE) the row belongs to; the table's partition.",
        "_source_file": "Lineage: gs:// URI of the stored export ZIP the row was parsed from.",
        "_loaded_at": "Lineage: when the pipeline parsed the row (UTC).",
    }
)
"""What each documented and lineage column means: shown in the Dagster catalog and on the BigQuery table."""
VENDOR_COLUMN_DESCRIPTION: Final = "Added by the vendor after this pipeline documented the source; kept as text."


def column_dtypes(source: DataSource, columns: Sequence[str]) -> dict[str, pl.DataType]:
    """The Parquet type of each named column: documented ones as typed above, lineage as added by the parser,
    and every other (vendor-added) column as text."""
    documented = SCHEMAS[source].columns
    return {name: documented.get(name) or LINEAGE_DTYPES.get(name) or pl.String() for name in columns}
