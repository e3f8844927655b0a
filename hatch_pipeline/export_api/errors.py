"""Typed errors for the Hatch Bulk Export API.

Every message names the problem and the fix. None of them ever carries the API key: callers build them
from windows, statuses and server messages only.
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from hatch_pipeline.contract import ExportWindow


class HatchExportError(Exception):
    """Base class of every error raised by the export API layer."""


class InvalidExportRequest(HatchExportError):
    """The request breaks the published contract (found locally before sending, or answered 400)."""


class AuthenticationFailed(HatchExportError):
    """401: the key is missing, wrong, or the organization lacks the Bulk Export API."""


class PayloadTooLarge(HatchExportError):
    """413: the window holds more than the vendor's uncompressed limit; the caller splits it."""

    def __init__(self, source: str, window: ExportWindow) -> None:
        super().__init__(
            f"{source} export for {window} is larger than the vendor's payload limit (HTTP 413); narrow the date range"
        )
        self.source = source
        self.window = window


class SlotUnavailable(HatchExportError):
    """The rate ledger's next free slot is further away than the caller is willing to wait."""

    def __init__(self, opens_at: datetime, reason: str) -> None:
        super().__init__(
            f"No export slot is free soon enough: {reason}. The next slot opens at "
            f"{opens_at.isoformat(timespec='seconds')}; run again after that."
        )
        self.opens_at = opens_at


class RateLimited(SlotUnavailable):
    """429 answers kept coming after waiting as long as the ledger's max_wait allows (the same budget as any
    slot wait, so callers handle both alike: stop, and try again after `opens_at`)."""


class ExportFailed(HatchExportError):
    """5xx answers, timeouts, cut-off or corrupt bodies kept coming after bounded retries."""


class CorruptExport(HatchExportError):
    """A 200 body that is not the ZIP the contract promises (retried by the client, then ExportFailed)."""
