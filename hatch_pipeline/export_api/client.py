"""HTTP client of the Hatch Bulk Export API: one export, its retries, and a verified ZIP on disk.

Every attempt, retries included, first reserves a slot in the shared rate ledger and is admitted by it right
before it leaves, so no retry loop and no late wake-up can break the vendor's limits as the vendor measures them.
Admission also asks the caller which days are still worth requesting (another run may have stored or claimed
some meanwhile). A 200 body is streamed to disk and proven to be the promised single-file ZIP before it is kept.
The API key lives only in the Authorization header of the underlying httpx client.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import random
import tempfile
import time
import zipfile
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from email.utils import parsedate_to_datetime
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from types import TracebackType
from typing import Final, Self, cast, overload
from zoneinfo import ZoneInfo

import httpx

from hatch_pipeline.contract import (
    OUTPUT_FORMATS,
    DataSource,
    ExportWindow,
    OutputFormat,
    contract_violations,
)
from hatch_pipeline.export_api.base_url import is_loopback, validate_base_url
from hatch_pipeline.export_api.errors import (
    AuthenticationFailed,
    CorruptExport,
    ExportFailed,
    HatchExportError,
    InvalidExportRequest,
    PayloadTooLarge,
    RateLimited,
)
from hatch_pipeline.export_api.ledger import Admission, Decide, RateLedger, new_owner

_LOG = logging.getLogger(__name__)


def _user_agent() -> str:
    try:
        return f"hatch-pipeline/{version('hatch-pipeline')}"
    except PackageNotFoundError:  # running from a source tree that was never installed
        return "hatch-pipeline/unknown"


USER_AGENT: Final = _user_agent()

_CHUNK_BYTES: Final = 1 << 20
_ERROR_BODY_LIMIT: Final = 64 * 1024
"""Error bodies are short JSON; reading more would only let a broken server fill memory."""
_MESSAGE_LIMIT: Final = 500

_TRANSIENT_TRANSPORT_ERRORS: Final = (
    httpx.TimeoutException,
    httpx.NetworkError,
    httpx.RemoteProtocolError,
    httpx.DecodingError,
)
"""Failures where the same request may well succeed later: timeouts, resets, a body cut off mid-way."""
_NOT_SENT_ERRORS: Final = (httpx.ConnectError, httpx.ConnectTimeout)
"""Of those, the ones where no connection was made: the request never left, and the vendor counted nothing."""


@dataclass(frozen=True)
class ExportedFile:
    """A 200: the ZIP kept on disk exactly as received, after proving it holds the promised file."""

    source: DataSource
    window: ExportWindow
    output_format: OutputFormat
    path: Path
    member_name: str
    compressed_bytes: int
    uncompressed_bytes: int
    sha256: str
    waited_seconds: float
    """Seconds spent waiting for ledger slots and retry backoff, over all attempts."""
    attempts: int
    claim_owner: str
    """Owner of the ledger claim on `window`: release it once the ZIP is stored (`RateLedger.release`)."""


@dataclass(frozen=True)
class EmptyExport:
    """A 204: the window holds no rows (a real answer, not a failure)."""

    source: DataSource
    window: ExportWindow
    waited_seconds: float
    attempts: int
    claim_owner: str


@dataclass(frozen=True)
class NothingToSend:
    """The caller's `decide` found nothing left to request when the slot came (stored or claimed by others)."""

    source: DataSource
    window: ExportWindow
    """The window that was asked for."""
    waited_seconds: float


ExportOutcome = ExportedFile | EmptyExport


@dataclass(frozen=True)
class ExportRetry:
    """How hard to try before giving up; the defaults suit a vendor that allows one export per 5 minutes."""

    max_attempts: int = 5
    """Attempts that may end in 5xx, timeouts or resets before an answer (429s are bounded by the ledger's
    max_wait instead, the same budget as any slot wait)."""
    max_body_retries: int = 1
    """Retries after a 200 whose body was cut off or corrupt: the vendor counted that export, so each retry spends
    another one for the same bytes; kept low on purpose."""
    base_delay_seconds: float = 2.0
    max_delay_seconds: float = 120.0
    connect_timeout_seconds: float = 30
    read_timeout_seconds: float = 300

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError(f"ExportRetry.max_attempts must be at least 1 (got {self.max_attempts})")
        if self.max_body_retries < 0:
            raise ValueError(f"ExportRetry.max_body_retries must be zero or more (got {self.max_body_retries})")

    def backoff_ceiling(self, failures: int) -> float:
        """Exponential ceiling after `failures` consecutive failures, capped at max_delay_seconds."""
        return float(min(self.max_delay_seconds, self.base_delay_seconds * 2 ** (failures - 1)))


@dataclass(frozen=True)
class _Retryable:
    """An attempt that failed in a way a later attempt may not."""

    cause: str
    retry_after_seconds: float | None
    rate_limited: bool
    spent: bool = False
    """The vendor answered 200 (and counted the export) but the body did not arrive intact."""
    reached: bool = True
    """False when no connection was made, so the request never reached the vendor and counts nothing."""


class HatchExportClient:
    """Exports one (data source, window) at a time, within the ledger's limits, retrying what is worth retrying."""

    def __init__(
        self,
        *,
        api_key: str,
        base_url: str,
        ledger: RateLedger,
        output_format: OutputFormat = "json",
        max_payload_bytes: int = 100_000_000,
        timezone: str = "UTC",
        retry: ExportRetry = ExportRetry(),
        today: Callable[[], date] | None = None,
        sleep: Callable[[float], None] = time.sleep,
        transport: httpx.BaseTransport | None = None,
        log: logging.Logger | logging.LoggerAdapter[logging.Logger] | None = None,
    ) -> None:
        validate_base_url(base_url)
        _check_api_key(api_key)
        if output_format not in OUTPUT_FORMATS:
            raise ValueError(
                f"output_format {output_format!r} is not supported; use one of {', '.join(OUTPUT_FORMATS)}"
            )
        zone = ZoneInfo(timezone)
        self._base_url = base_url
        self._ledger = ledger
        self._output_format: OutputFormat = output_format
        self._max_payload_bytes = max_payload_bytes
        self._retry = retry
        self._today = today or (lambda: datetime.now(zone).date())
        self._sleep = sleep
        self._log = log or _LOG
        self._http = httpx.Client(
            base_url=base_url,
            # identity: a ZIP gains nothing from gzip, and the file on disk is then byte for byte what was sent.
            headers={"Authorization": f"Bearer {api_key}", "User-Agent": USER_AGENT, "Accept-Encoding": "identity"},
            timeout=httpx.Timeout(retry.read_timeout_seconds, connect=retry.connect_timeout_seconds),
            transport=transport,
            # Loopback never needs a proxy, and an HTTP_PROXY would receive the key in clear text over plain http.
            # Remote https keeps the environment's proxy and CA settings: CONNECT tunnels keep the header encrypted.
            trust_env=not is_loopback(base_url),
        )

    def __repr__(self) -> str:
        return f"HatchExportClient(base_url={self._base_url!r}, output_format={self._output_format!r})"

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    @overload
    def export(self, source: str, window: ExportWindow, dest_dir: Path, *, decide: None = None) -> ExportOutcome: ...

    @overload
    def export(
        self, source: str, window: ExportWindow, dest_dir: Path, *, decide: Decide
    ) -> ExportOutcome | NothingToSend: ...

    def export(
        self, source: str, window: ExportWindow, dest_dir: Path, *, decide: Decide | None = None
    ) -> ExportOutcome | NothingToSend:
        """Export `source` for `window` into `dest_dir/{source}_{start}_{end}.zip` (or learn that it is empty).

        `decide`, called when each attempt's slot has come, gets the live claims of other senders and returns
        the part of `window` to request (a sub-window; the outcome then carries it), or None to send nothing.
        By default the whole window is requested. A successful outcome holds a ledger claim on its window that
        the caller releases once the result is stored; on an error the claim is released here.

        Raises InvalidExportRequest before sending anything when the request breaks the published rules,
        SlotUnavailable (RateLimited for 429s) when the ledger has no slot soon enough, and the typed errors of
        errors.py otherwise.
        """
        problems = contract_violations(source, window, self._today())
        if problems:
            raise InvalidExportRequest(f"Refusing to request {source} for {window}: " + "; ".join(problems))
        data_source = cast(DataSource, source)
        dest_dir.mkdir(parents=True, exist_ok=True)
        owner = new_owner()
        try:
            outcome = self._export(data_source, window, dest_dir, decide or (lambda claims: window), owner)
        except BaseException:
            self._ledger.release(owner)
            raise
        if isinstance(outcome, NothingToSend):
            self._ledger.release(owner)  # a retry that found nothing left holds no claim on the days
        return outcome

    def _export(
        self, source: DataSource, window: ExportWindow, dest_dir: Path, decide: Decide, owner: str
    ) -> ExportOutcome | NothingToSend:
        attempt = failures = body_failures = 0
        waited = rate_limit_waited = 0.0
        not_before: datetime | None = None
        while True:
            reservation = self._ledger.reserve(not_before)
            admission = self._ledger.admit(reservation, source, decide, owner)
            waited += reservation.waited_seconds + (admission.waited_seconds if admission else 0.0)
            if admission is None:
                return NothingToSend(source=source, window=window, waited_seconds=waited)
            attempt += 1
            result = self._attempt(source, admission.window, dest_dir, attempt, waited, owner)
            if not isinstance(result, _Retryable):
                return result
            retry_after = result.retry_after_seconds
            if not result.reached:
                self._ledger.cancel(admission.sent_at)  # the vendor never saw it: its slot counts nothing
            if result.rate_limited:
                # The vendor did not count a 429: give its slot back, and let everyone sharing the ledger know
                # when the vendor will take requests again, so the retry books one slot, not two.
                resume = None if retry_after is None else _now() + timedelta(seconds=retry_after)
                self._ledger.cancel(admission.sent_at, retry_after=resume)
                not_before = _now() + timedelta(seconds=self._retry.backoff_ceiling(attempt))
                if resume is not None:
                    not_before = max(not_before, resume)
                rate_limit_waited += self._rate_limit_wait(source, admission, not_before, rate_limit_waited)
                continue
            if result.spent:
                body_failures += 1
                if body_failures > self._retry.max_body_retries:
                    raise ExportFailed(
                        f"The {source} export for {admission.window} arrived broken {body_failures} times "
                        f"(last: {result.cause}); each retry spends another export, so the client stops here. "
                        "Check the network path to the API (proxies that cut or rewrite bodies), then run again."
                    )
            else:
                failures += 1
                if failures >= self._retry.max_attempts:
                    raise ExportFailed(
                        f"The {source} export for {admission.window} failed after {attempt} attempts; last cause: "
                        f"{result.cause}. The API may be unavailable: run again later."
                    )
            backoff = random.uniform(0, self._retry.backoff_ceiling(failures + body_failures))
            self._sleep(backoff)
            waited += backoff
            not_before = None if retry_after is None else _now() + timedelta(seconds=retry_after)

    def _rate_limit_wait(
        self, source: DataSource, admission: Admission, not_before: datetime, waited_so_far: float
    ) -> float:
        """The wait the next slot implies, or RateLimited when 429s would hold this export longer than the
        ledger's max_wait: the one budget for every wait, so a run stops cleanly instead of hanging."""
        opens_at = self._ledger.next_slot(not_before)
        expected = max(0.0, (opens_at - _now()).total_seconds())
        if waited_so_far + expected > self._ledger.max_wait.total_seconds():
            raise RateLimited(
                opens_at=opens_at,
                reason=(
                    f"the vendor keeps answering the {source} export for {admission.window} with HTTP 429 "
                    f"(waited {waited_so_far:.1f} s; the next try would be {expected:.1f} s away, beyond max_wait "
                    f"{self._ledger.max_wait}). Another client of the same organization may be using its export "
                    "quota"
                ),
            )
        return expected

    def _attempt(
        self, source: DataSource, window: ExportWindow, dest_dir: Path, attempt: int, waited: float, owner: str
    ) -> ExportOutcome | _Retryable:
        """Send one request and turn its answer into an outcome, a retryable failure, or a final error."""
        params = {"data_source": source, "start_date": window.start.isoformat(), "end_date": window.end.isoformat()}
        if self._output_format != "json":
            params["output_format"] = self._output_format
        response: httpx.Response | None = None
        failure: str | None = None
        try:
            with self._http.stream("GET", "export-data", params=params) as response:
                if response.status_code == 200:
                    return self._receive_zip(response, source, window, dest_dir, attempt, waited, owner)
                body = _read_limited(response)
            return self._interpret(response, body, source, window, attempt, waited, owner)
        except (CorruptExport, *_TRANSIENT_TRANSPORT_ERRORS) as exc:
            failure = f"{type(exc).__name__}: {exc}"
            spent = response is not None and response.status_code == 200
            reached = not isinstance(exc, _NOT_SENT_ERRORS)
            return _Retryable(cause=failure, retry_after_seconds=None, rate_limited=False, spent=spent, reached=reached)
        finally:
            self._log_attempt(source, window, attempt, response, failure)

    def _interpret(
        self,
        response: httpx.Response,
        body: bytes,
        source: DataSource,
        window: ExportWindow,
        attempt: int,
        waited: float,
        owner: str,
    ) -> EmptyExport | _Retryable:
        """Map a non-200 answer to the published contract."""
        status = response.status_code
        if status == 204:
            self._ledger.record_bytes(source, window, 0)
            return EmptyExport(source=source, window=window, waited_seconds=waited, attempts=attempt, claim_owner=owner)
        message = self._server_message(body)
        if status == 400:
            raise InvalidExportRequest(f"The API refused the {source} export for {window} (HTTP 400): {message}")
        if status in (401, 403):
            raise AuthenticationFailed(
                f"The API rejected the API key (HTTP {status}: {message}). Check HATCH_API_KEY, and that the "
                "Bulk Export API is enabled for your organization (ask your Hatch account manager)."
            )
        if status == 413:
            # Not recorded as a size: a 413 proves only a lower bound, which the planner keeps for the run.
            raise PayloadTooLarge(source, window)
        retry_after = _retry_after_seconds(response.headers.get("Retry-After"))
        if status == 429:
            return _Retryable(cause=f"HTTP 429: {message}", retry_after_seconds=retry_after, rate_limited=True)
        if status == 408 or status >= 500:
            return _Retryable(cause=f"HTTP {status}: {message}", retry_after_seconds=retry_after, rate_limited=False)
        raise HatchExportError(
            f"Unexpected HTTP {status} from {response.request.url.copy_with(query=None)}: {message}. "
            "Check HATCH_API_BASE_URL: it should point at the Bulk Export API, e.g. "
            "https://bulk-export-api.usehatchapp.com/api/v1"
        )

    def _receive_zip(
        self,
        response: httpx.Response,
        source: DataSource,
        window: ExportWindow,
        dest_dir: Path,
        attempt: int,
        waited: float,
        owner: str,
    ) -> ExportedFile:
        """Stream the body to a temp file, prove it, then give it its contract name; remove it on any failure."""
        stem = f"{source}_{window.start.isoformat()}_{window.end.isoformat()}"
        member_name = f"{stem}.{self._output_format}"
        handle, temp_name = tempfile.mkstemp(dir=dest_dir, prefix=f".{stem}.", suffix=".part")
        temp_path = Path(temp_name)
        try:
            digest = hashlib.sha256()
            compressed_bytes = 0
            with os.fdopen(handle, "wb") as out:
                for chunk in response.iter_bytes(_CHUNK_BYTES):
                    out.write(chunk)
                    digest.update(chunk)
                    compressed_bytes += len(chunk)
            declared_length = response.headers.get("Content-Length")
            encoded = "Content-Encoding" in response.headers  # then Content-Length counts the encoded bytes
            if declared_length is not None and not encoded and int(declared_length) != compressed_bytes:
                raise CorruptExport(
                    f"the body has {compressed_bytes} bytes but Content-Length promised {declared_length}"
                )
            uncompressed_bytes = _verified_member_size(temp_path, member_name, self._max_payload_bytes)
            if uncompressed_bytes > self._max_payload_bytes:
                self._ledger.record_bytes(source, window, uncompressed_bytes)
                raise PayloadTooLarge(source, window)
            final_path = dest_dir / f"{stem}.zip"
            temp_path.replace(final_path)
        except BaseException:
            temp_path.unlink(missing_ok=True)
            raise
        self._ledger.record_bytes(source, window, uncompressed_bytes)
        return ExportedFile(
            source=source,
            window=window,
            output_format=self._output_format,
            path=final_path,
            member_name=member_name,
            compressed_bytes=compressed_bytes,
            uncompressed_bytes=uncompressed_bytes,
            sha256=digest.hexdigest(),
            waited_seconds=waited,
            attempts=attempt,
            claim_owner=owner,
        )

    def _log_attempt(
        self,
        source: DataSource,
        window: ExportWindow,
        attempt: int,
        response: httpx.Response | None,
        failure: str | None,
    ) -> None:
        status = "no answer" if response is None else f"HTTP {response.status_code}"
        body_bytes = 0 if response is None else response.num_bytes_downloaded
        self._log.info(
            "%s %s attempt %d: %s, %d bytes%s",
            source,
            window,
            attempt,
            status,
            body_bytes,
            "" if failure is None else f", failed: {failure}",
        )

    def _server_message(self, body: bytes) -> str:
        """The server's own words ({"error": ...} or plain text), short, and scrubbed of the key should it echo it."""
        text = body.decode("utf-8", errors="replace").strip()
        try:
            parsed = json.loads(text)
        except ValueError:
            parsed = None
        if isinstance(parsed, dict) and isinstance(parsed.get("error"), str):
            text = parsed["error"]
        key = self._http.headers["Authorization"].removeprefix("Bearer ")
        text = text.replace(key, "[API key]")
        return (text[:_MESSAGE_LIMIT] + "...") if len(text) > _MESSAGE_LIMIT else text or "(no message)"


def _verified_member_size(path: Path, member_name: str, limit: int) -> int:
    """Prove `path` is a ZIP holding exactly `member_name` with an intact CRC; return the member's size.

    A declared size above `limit` is returned without decompressing anything, and reading stops one byte past
    `limit`, so a ZIP bomb costs neither memory nor disk. Member names are compared, never used as paths.
    """
    try:
        with zipfile.ZipFile(path) as archive:
            members = archive.infolist()
            names = [member.filename for member in members]
            if names != [member_name]:
                shown = ", ".join(repr(name[:100]) for name in names[:5]) or "nothing"
                raise CorruptExport(f"the ZIP holds {shown}; the contract promises exactly one file {member_name!r}")
            member = members[0]
            if member.flag_bits & 0x1:
                raise CorruptExport(f"{member_name} is encrypted; the contract promises a plain ZIP")
            if member.file_size > limit:
                return member.file_size
            size = 0
            with archive.open(member) as stream:
                while chunk := stream.read(_CHUNK_BYTES):
                    size += len(chunk)
                    if size > limit:
                        return size
            if size != member.file_size:
                raise CorruptExport(f"{member_name} holds {size} bytes but its header declares {member.file_size}")
            return size
    except (zipfile.BadZipFile, zlib.error, EOFError, NotImplementedError) as exc:
        raise CorruptExport(f"the body is not a valid ZIP ({exc})") from exc


def _read_limited(response: httpx.Response) -> bytes:
    body = bytearray()
    for chunk in response.iter_bytes():
        body.extend(chunk)
        if len(body) >= _ERROR_BODY_LIMIT:
            break
    return bytes(body[:_ERROR_BODY_LIMIT])


def _retry_after_seconds(value: str | None) -> float | None:
    """Retry-After is either delay-seconds or an HTTP date (RFC 9110); anything else is ignored."""
    if value is None:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - _now()).total_seconds())


def _check_api_key(api_key: str) -> None:
    """Refuse keys that cannot travel in a header, before httpx or h11 echo them in an error message."""
    if not api_key or not api_key.isascii() or not api_key.isprintable() or any(c.isspace() for c in api_key):
        raise ValueError(
            "The API key is empty or holds spaces or non-ASCII characters; set HATCH_API_KEY to the key exactly "
            "as Hatch issued it"
        )


def _now() -> datetime:
    return datetime.now(UTC)
