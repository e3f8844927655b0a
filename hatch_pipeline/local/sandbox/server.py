"""A loopback HTTP server that honours the published contract of the Hatch Bulk Export API.

The demo, the tests and the benchmarks talk to it instead of the vendor, over real connections, so the client's
HTTP handling (statuses, headers, streaming, broken bodies) is exercised for real. Faults the vendor may produce
can be injected one request at a time, or scheduled at chosen request numbers.

Handling order of `GET /api/v1/export-data`: authentication (401) -> parameter and contract validation (400) ->
the fault scheduled at this request's number, else the next injected fault, if any: a fault that takes over
answers now (after its delay) -> rate limits (429) -> a slow fault's delay -> the export (200, 204 or 413).
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import shutil
import socket
import struct
import tempfile
import threading
import time
import zipfile
from collections import OrderedDict, deque
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import BinaryIO, Final, cast
from urllib.parse import parse_qs, urlsplit

from hatch_pipeline.contract import (
    OUTPUT_FORMATS,
    DataSource,
    ExportWindow,
    OutputFormat,
    contract_violations,
    parse_day,
)
from hatch_pipeline.local.sandbox.data import SandboxConfig, render_export, row_count

BASE_PATH: Final = "/api/v1"
EXPORT_PATH: Final = f"{BASE_PATH}/export-data"
CHUNK_BYTES: Final = 64 * 1024
MAX_CACHED_EXPORTS: Final = 32
"""Built ZIPs kept on disk per server; the least recently used is deleted beyond this."""

_DAY_SECONDS: Final = 86_400.0
_POLL_SECONDS: Final = 0.05
"""How often the serving thread looks for a stop request: stop() returns within this."""
_CORRUPT_BODY: Final = b"PK\x03\x04" + b"this is not a zip archive; the transfer was garbled\n" * 64
"""Starts like a ZIP (so a magic-number sniff passes) but has no central directory."""
_ABORT_ON_CLOSE: Final = struct.pack("ii", 1, 0)
"""SO_LINGER on, for 0 seconds: close() sends an RST and drops what is unsent."""

DEFAULT_CONFIG: Final = SandboxConfig()

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Fault:
    """One injected misbehaviour, applied to one authenticated, valid export request.

    Fault(status=500): that status with a JSON error body (Retry-After sent when `retry_after` is set).
    Fault(slow=2.0): wait that many seconds, then answer normally (the answer counts as usual).
    Fault(cut=0.5): 200 with the full Content-Length, then only that fraction of the ZIP, then close.
    Fault(corrupt=True): 200 application/zip whose body is not a ZIP.
    Fault(reset=0): the connection is reset (TCP RST) before any answer; the access record's status is 0.
    Fault(reset=0.5): 200 with the full Content-Length, that fraction of the ZIP, then a reset (not a clean close).
    `slow` combines with the others; status, cut, corrupt and reset exclude each other.
    """

    status: int | None = None
    retry_after: int | None = None
    message: str = "injected fault: the sandbox was told to fail this request"
    slow: float = 0.0
    cut: float | None = None
    corrupt: bool = False
    reset: float | None = None

    def __post_init__(self) -> None:
        if sum((self.status is not None, self.cut is not None, self.corrupt, self.reset is not None)) > 1:
            raise ValueError(
                "a Fault takes at most one of status, cut, corrupt and reset; inject several faults instead"
            )
        if self.status is not None and not 100 <= self.status <= 599:
            raise ValueError(f"status {self.status} is not an HTTP status code (100-599)")
        if self.cut is not None and not 0 <= self.cut < 1:
            raise ValueError(f"cut {self.cut} must be a fraction of the body in [0, 1)")
        if self.reset is not None and not 0 <= self.reset < 1:
            raise ValueError(f"reset {self.reset} must be a fraction of the body in [0, 1) (0: before any answer)")
        if self.slow < 0:
            raise ValueError(f"slow {self.slow} must be zero or more seconds")
        if self.retry_after is not None and self.status is None:
            raise ValueError("retry_after only applies to a Fault with a status")
        if not (self.slow or self.takes_over):
            raise ValueError("an empty Fault does nothing; set status, slow, cut, corrupt or reset")

    @property
    def takes_over(self) -> bool:
        """Whether the fault replaces the normal answer (a slow fault only delays it)."""
        return self.status is not None or self.cut is not None or self.corrupt or self.reset is not None

    def __str__(self) -> str:
        parts = [f"slow {self.slow:g}s"] if self.slow else []
        if self.status is not None:
            parts.append(f"status {self.status}")
        if self.cut is not None:
            parts.append(f"cut {self.cut:g}")
        if self.corrupt:
            parts.append("corrupt")
        if self.reset is not None:
            parts.append(f"reset {self.reset:g}")
        return ", ".join(parts)


@dataclass(frozen=True)
class AccessRecord:
    """One request as the server saw it. Parameters are the raw strings sent; the key is never kept.

    `status` is the status sent, or 0 when the connection was reset before any answer; `fault` is the injected
    fault that handled the request (str(Fault)), None for a request answered on its own merits.
    """

    at: datetime
    organization_id: str | None
    data_source: str | None
    start_date: str | None
    end_date: str | None
    output_format: str | None
    status: int
    body_bytes: int
    fault: str | None


@dataclass(frozen=True)
class ExportRequest:
    source: DataSource
    window: ExportWindow
    output_format: OutputFormat

    @property
    def file_stem(self) -> str:
        return f"{self.source}_{self.window.start.isoformat()}_{self.window.end.isoformat()}"


class Rejected(Exception):
    """A request answered with an error status and a JSON body `{"error": message}`."""

    def __init__(self, status: int, message: str, headers: Mapping[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = dict(headers or {})


def parse_export_request(query: Mapping[str, list[str]], today: date) -> ExportRequest:
    """The request's parameters checked against the contract; raises Rejected(400) naming every problem found."""

    def value(name: str) -> str | None:
        values = query.get(name)
        return values[0] if values else None

    missing = [name for name in ("data_source", "start_date", "end_date") if not value(name)]
    problems = (
        [f"missing required parameter(s) {', '.join(missing)}; send data_source, start_date and end_date"]
        if missing
        else []
    )
    days: dict[str, date] = {}
    for name in ("start_date", "end_date"):
        raw = value(name)
        if raw:
            try:
                days[name] = parse_day(raw, name)
            except ValueError as error:
                problems.append(str(error))
    output_format = value("output_format") if "output_format" in query else "json"
    if output_format not in OUTPUT_FORMATS:
        problems.append(f"unknown output_format {output_format!r}; use one of {', '.join(OUTPUT_FORMATS)}")
    if not problems and days["end_date"] < days["start_date"]:
        problems.append(f"end_date {days['end_date']} is before start_date {days['start_date']}; swap them")
    if problems:
        raise Rejected(HTTPStatus.BAD_REQUEST, "; ".join(problems))
    source = cast(str, value("data_source"))
    window = ExportWindow(days["start_date"], days["end_date"])
    violations = contract_violations(source, window, today)
    if violations:
        raise Rejected(HTTPStatus.BAD_REQUEST, "; ".join(violations))
    return ExportRequest(cast(DataSource, source), window, cast(OutputFormat, output_format))


class ExportCounter:
    """The vendor's rate limits, per organization.

    Counting rule: a request that passed authentication and validation and is answered 200, 204 or 413 counts as
    an export (it is admitted here before the answer is built, and only those answers follow admission). Requests
    answered 400, 401 or 429, and requests taken over by an injected fault (status, cut, corrupt, reset), do not
    count.
    A slow fault only delays the request, which then counts like any other.
    """

    def __init__(self) -> None:
        self._admitted: dict[str, deque[float]] = {}
        self._lock = threading.Lock()

    def admit(self, organization_id: str, now: float, interval_seconds: float, per_day: int) -> float | None:
        """Count an export at monotonic time `now`, or refuse it and return the seconds until it would be allowed."""
        with self._lock:
            admitted = self._admitted.setdefault(organization_id, deque())
            while admitted and now - admitted[0] >= _DAY_SECONDS:
                admitted.popleft()
            waits = []
            if admitted and now - admitted[-1] < interval_seconds:
                waits.append(admitted[-1] + interval_seconds - now)
            if len(admitted) >= per_day:
                waits.append(admitted[-per_day] + _DAY_SECONDS - now)
            if waits:
                return max(waits)
            admitted.append(now)
            return None


@dataclass(frozen=True)
class _BuiltExport:
    """A ZIP on disk, or what stopped it: no rows, or the data file outgrew the payload limit."""

    path: Path | None
    uncompressed_bytes: int
    complete: bool

    def too_large_for(self, limit: int) -> bool:
        return self.uncompressed_bytes > limit


class ExportCache:
    """Built ZIPs on disk, keyed by everything their bytes depend on, so repeated requests skip regeneration."""

    def __init__(self, directory: Path) -> None:
        self._directory = directory
        self._entries: OrderedDict[tuple[object, ...], _BuiltExport] = OrderedDict()
        self._lock = threading.Lock()

    def open(
        self, organization_id: str, request: ExportRequest, config: SandboxConfig
    ) -> tuple[_BuiltExport, BinaryIO | None]:
        """The export and, when it is a ZIP within the payload limit, its file opened for reading."""
        key = (
            organization_id,
            request,
            config.seed,
            config.rows_per_day,
            config.new_columns_from,
            config.empty_days,
            config.extra_columns,
            config.edge_values,
        )
        with self._lock:
            built = self._entries.get(key)
            if built is None or (not built.complete and not built.too_large_for(config.max_payload_bytes)):
                built = self._build(organization_id, request, config)
                self._remember(key, built)
            self._entries.move_to_end(key)
            if built.path is None or built.too_large_for(config.max_payload_bytes):
                return built, None
            return built, built.path.open("rb")

    def clear(self) -> None:
        with self._lock:
            for built in self._entries.values():
                if built.path is not None:
                    built.path.unlink(missing_ok=True)
            self._entries.clear()

    def _remember(self, key: tuple[object, ...], built: _BuiltExport) -> None:
        stale = self._entries.pop(key, None)
        if stale is not None and stale.path is not None:
            stale.path.unlink(missing_ok=True)
        self._entries[key] = built
        while len(self._entries) > MAX_CACHED_EXPORTS:
            _, evicted = self._entries.popitem(last=False)
            if evicted.path is not None:
                evicted.path.unlink(missing_ok=True)  # a reader holding it open keeps its bytes (POSIX)

    def _build(self, organization_id: str, request: ExportRequest, config: SandboxConfig) -> _BuiltExport:
        """Stream the data file into a ZIP on disk, stopping as soon as it outgrows the payload limit."""
        if row_count(request.window, config) == 0:
            return _BuiltExport(None, 0, complete=True)
        limit = config.max_payload_bytes
        descriptor, name = tempfile.mkstemp(suffix=".zip", dir=self._directory)
        path = Path(name)
        written = 0
        with os.fdopen(descriptor, "wb") as raw, zipfile.ZipFile(raw, "w", zipfile.ZIP_DEFLATED) as archive:
            member_name = f"{request.file_stem}.{request.output_format}"
            with archive.open(member_name, "w", force_zip64=limit >= zipfile.ZIP64_LIMIT) as member:
                chunks = render_export(request.source, request.window, request.output_format, config, organization_id)
                for chunk in chunks:
                    written += len(chunk)
                    if written > limit:
                        break
                    member.write(chunk)
        if written > limit:
            path.unlink()
            return _BuiltExport(None, written, complete=False)
        return _BuiltExport(path, written, complete=True)


class SandboxServer:
    """The sandbox on a background thread: `with SandboxServer(config) as server: ... server.base_url ...`."""

    def __init__(self, config: SandboxConfig = DEFAULT_CONFIG, host: str = "127.0.0.1", port: int = 0) -> None:
        self.config = config
        """Read once per request, so tests may swap it at runtime with dataclasses.replace."""
        self._host = host
        self._port = port
        self._faults: deque[Fault] = deque()
        self._scheduled: dict[int, Fault] = {}
        self._valid_requests = 0
        """Authenticated, valid export requests received so far: the numbers `inject_at` schedules by."""
        self._log: list[AccessRecord] = []
        self._lock = threading.Lock()
        self._counter = ExportCounter()
        self._stopping = threading.Event()
        self._httpd: _HTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._directory: Path | None = None
        self._cache: ExportCache | None = None

    def __enter__(self) -> SandboxServer:
        self.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stop()

    def start(self) -> None:
        if self._httpd is not None:
            raise RuntimeError("the sandbox server is already running; stop() it before starting again")
        self._directory = Path(tempfile.mkdtemp(prefix="hatch-sandbox-"))
        self._cache = ExportCache(self._directory)
        self._stopping.clear()
        self._httpd = _HTTPServer((self._host, self._port), self)
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, args=(_POLL_SECONDS,), name="hatch-sandbox", daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        """Stop serving and delete every built ZIP (safe to call twice)."""
        if self._httpd is None:
            return
        self._stopping.set()
        self._httpd.shutdown()
        self._httpd.server_close()
        if self._thread is not None:
            self._thread.join()
        if self._cache is not None:
            self._cache.clear()
        if self._directory is not None:
            shutil.rmtree(self._directory, ignore_errors=True)
        self._httpd = self._thread = self._directory = self._cache = None

    @property
    def base_url(self) -> str:
        if self._httpd is None:
            raise RuntimeError("the sandbox server is not running; call start() or use it as a context manager")
        host, port = self._httpd.server_address[:2]
        return f"http://{host!s}:{port}{BASE_PATH}"

    @property
    def access_log(self) -> list[AccessRecord]:
        """Every request so far, in arrival order; a request is logged before its answer is sent."""
        with self._lock:
            return list(self._log)

    def clear_access_log(self) -> None:
        with self._lock:
            self._log.clear()

    def inject(self, *faults: Fault) -> None:
        """Queue faults; each takes over the next authenticated, valid export request, in order (skipping requests
        that `inject_at` scheduled a fault for)."""
        with self._lock:
            self._faults.extend(faults)

    def inject_at(self, faults: Mapping[int, Fault]) -> None:
        """Schedule faults by request number: {3: Fault(status=500)} takes over the third authenticated, valid
        export request this server receives (counted from its start, 1 being the first), whatever came before."""
        with self._lock:
            for number in faults:
                if number <= self._valid_requests:
                    raise ValueError(
                        f"request {number} cannot get a fault: {self._valid_requests} request(s) have arrived "
                        "already; schedule faults before the requests they target (numbers start at 1)"
                    )
                if number in self._scheduled:
                    raise ValueError(
                        f"request {number} already has a fault ({self._scheduled[number]}); combine them in one Fault"
                    )
            self._scheduled.update(faults)

    def _handle(self, path: str, query: Mapping[str, list[str]], authorization: str | None) -> _Answer:
        """Decide the answer to one request and log it; the handler only moves bytes."""
        config = self.config
        record = _RecordBuilder(query)
        try:
            answer = self._answer(path, query, authorization, config, record)
        except Rejected as rejection:
            answer = _Answer.error(rejection.status, rejection.message, rejection.headers)
        except Exception as error:
            logger.exception("the sandbox failed to answer %s", path)
            answer = _Answer.error(HTTPStatus.INTERNAL_SERVER_ERROR, f"sandbox bug, not an injected fault: {error}")
        with self._lock:
            self._log.append(record.build(answer))
        return answer

    def _answer(
        self,
        path: str,
        query: Mapping[str, list[str]],
        authorization: str | None,
        config: SandboxConfig,
        record: _RecordBuilder,
    ) -> _Answer:
        if path.rstrip("/") != EXPORT_PATH:
            raise Rejected(HTTPStatus.NOT_FOUND, f"no endpoint at {path}; exports are at {EXPORT_PATH}")
        organization_id = record.organization_id = authenticate(authorization, config.api_keys)
        request = parse_export_request(query, config.today or datetime.now(UTC).date())
        fault = self._next_fault()
        if fault is None or not fault.takes_over:
            self._admit(organization_id, config)  # on arrival, as the vendor counts: a slow answer is slow after it
        if fault is not None:
            record.fault = str(fault)
            if self._stopping.wait(fault.slow):
                raise Rejected(HTTPStatus.SERVICE_UNAVAILABLE, "the sandbox is shutting down; try again")
            if fault.takes_over:
                return self._fault_answer(fault, organization_id, request, config)
        return self._export_answer(organization_id, request, config)

    def _next_fault(self) -> Fault | None:
        """Count this request; its scheduled fault, else the next queued one, else None."""
        with self._lock:
            self._valid_requests += 1
            scheduled = self._scheduled.pop(self._valid_requests, None)
            if scheduled is not None:
                return scheduled
            return self._faults.popleft() if self._faults else None

    def _admit(self, organization_id: str, config: SandboxConfig) -> None:
        wait = self._counter.admit(
            organization_id, time.monotonic(), config.min_export_interval_seconds, config.max_exports_per_day
        )
        if wait is not None:
            seconds = max(1, math.ceil(wait))
            raise Rejected(
                HTTPStatus.TOO_MANY_REQUESTS,
                f"rate limit: at most one export every {config.min_export_interval_seconds:g} seconds and "
                f"{config.max_exports_per_day} per 24 hours per organization; retry in {seconds} seconds",
                {"Retry-After": str(seconds)} if config.send_retry_after else None,
            )

    def _open_export(
        self, organization_id: str, request: ExportRequest, config: SandboxConfig
    ) -> tuple[_BuiltExport, BinaryIO | None]:
        if self._cache is None:
            raise RuntimeError("the sandbox server is not running")
        return self._cache.open(organization_id, request, config)

    def _export_answer(self, organization_id: str, request: ExportRequest, config: SandboxConfig) -> _Answer:
        built, file = self._open_export(organization_id, request, config)
        if file is not None:
            return _Answer.zip(request, file=file)
        if built.too_large_for(config.max_payload_bytes):
            raise Rejected(
                HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
                f"the {request.source} export for {request.window} exceeds {config.max_payload_bytes} bytes "
                "uncompressed; narrow the date range",
            )
        return _Answer(HTTPStatus.NO_CONTENT)

    def _fault_answer(
        self, fault: Fault, organization_id: str, request: ExportRequest, config: SandboxConfig
    ) -> _Answer:
        if fault.status is not None:
            headers = None if fault.retry_after is None else {"Retry-After": str(fault.retry_after)}
            return _Answer.error(fault.status, fault.message, headers)
        if fault.corrupt:
            return _Answer.zip(request, body=_CORRUPT_BODY)
        if fault.reset == 0:
            return _Answer(0, reset=True)
        share = fault.cut if fault.reset is None else fault.reset
        # A cut or a reset mid-body needs a body: the real ZIP, or the corrupt bytes when the window has none.
        _, file = self._open_export(organization_id, request, config)
        if file is None:
            answer = _Answer.zip(request, body=_CORRUPT_BODY, cut=share)
        else:
            answer = _Answer.zip(request, file=file, cut=share)
        return answer if fault.reset is None else replace(answer, reset=True)


def authenticate(authorization: str | None, api_keys: Mapping[str, str]) -> str:
    """The organization of a `Bearer <key>` header; raises Rejected(401) without ever repeating the key."""
    challenge = {"WWW-Authenticate": "Bearer"}
    if not authorization:
        raise Rejected(
            HTTPStatus.UNAUTHORIZED, "missing Authorization header; send 'Authorization: Bearer <api-key>'", challenge
        )
    scheme, _, key = authorization.partition(" ")
    organization_id = api_keys.get(key.strip()) if scheme.lower() == "bearer" else None
    if organization_id is None:
        raise Rejected(
            HTTPStatus.UNAUTHORIZED,
            "the API key is not recognised (or not sent as a Bearer token); check the key and that your "
            "organization has the Bulk Export API enabled",
            challenge,
        )
    return organization_id


@dataclass(frozen=True)
class _Answer:
    """A response to send: status, headers, and a body from bytes or an open file, of which `sent` bytes go out.

    `sent` below the Content-Length is a cut: the connection closes after it. With `reset` the connection is
    reset (RST) after those bytes instead, or before anything when the status is 0.
    """

    status: int
    headers: Mapping[str, str] = field(default_factory=dict)
    body: bytes = b""
    file: BinaryIO | None = None
    sent: int = 0
    reset: bool = False

    @classmethod
    def error(cls, status: int, message: str, headers: Mapping[str, str] | None = None) -> _Answer:
        body = json.dumps({"error": message}).encode()
        return cls(status, _content_headers("application/json", len(body), headers), body=body, sent=len(body))

    @classmethod
    def zip(
        cls, request: ExportRequest, file: BinaryIO | None = None, body: bytes = b"", cut: float | None = None
    ) -> _Answer:
        length = len(body) if file is None else os.fstat(file.fileno()).st_size
        disposition = {"Content-Disposition": f'attachment; filename="{request.file_stem}.zip"'}
        headers = _content_headers("application/zip", length, disposition)
        return cls(HTTPStatus.OK, headers, body, file, length if cut is None else int(length * cut))

    @property
    def is_cut(self) -> bool:
        return "Content-Length" in self.headers and self.sent < int(self.headers["Content-Length"])


def _content_headers(content_type: str, length: int, extra: Mapping[str, str] | None) -> dict[str, str]:
    return {**(extra or {}), "Content-Type": content_type, "Content-Length": str(length)}


class _RecordBuilder:
    """The access record of the request being decided, filled in as the decision goes."""

    def __init__(self, query: Mapping[str, list[str]]) -> None:
        self.at = datetime.now(UTC)
        self.query = query
        self.organization_id: str | None = None
        self.fault: str | None = None

    def build(self, answer: _Answer) -> AccessRecord:
        def raw(name: str) -> str | None:
            values = self.query.get(name)
            return values[0] if values else None

        return AccessRecord(
            at=self.at,
            organization_id=self.organization_id,
            data_source=raw("data_source"),
            start_date=raw("start_date"),
            end_date=raw("end_date"),
            output_format=raw("output_format"),
            status=int(answer.status),
            body_bytes=answer.sent,
            fault=self.fault,
        )


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], sandbox: SandboxServer) -> None:
        self.sandbox = sandbox
        super().__init__(address, _Handler)

    def shutdown_request(self, request: socket.socket | tuple[bytes, socket.socket]) -> None:
        """Close a connection to reset without shutting it down first: a shutdown would send a FIN, and the
        client would see a clean close before the RST."""
        if (
            isinstance(request, socket.socket)
            and request.getsockopt(socket.SOL_SOCKET, socket.SO_LINGER, len(_ABORT_ON_CLOSE)) == _ABORT_ON_CLOSE
        ):
            self.close_request(request)
        else:
            super().shutdown_request(request)


class _Handler(BaseHTTPRequestHandler):
    """HTTP/1.1 transport only: parse the request line, ask the sandbox for the answer, send it."""

    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body go in separate writes: without this each request waits ~40 ms
    server_version = "HatchSandbox/1.0"
    sys_version = ""

    def log_message(self, format: str, *args: object) -> None:
        """Request lines go to the debug log; they hold the path and status, never a header."""
        logger.debug("%s " + format, self.address_string(), *args)

    def do_GET(self) -> None:
        url = urlsplit(self.path)
        sandbox = cast(_HTTPServer, self.server).sandbox
        answer = sandbox._handle(
            url.path, parse_qs(url.query, keep_blank_values=True), self.headers.get("Authorization")
        )
        try:
            if answer.status:
                self.send_response(answer.status)
                for name, value in answer.headers.items():
                    self.send_header(name, value)
                self.end_headers()
                self._send_body(answer)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True  # the client went away; nothing left to tell it
        finally:
            if answer.file is not None:
                answer.file.close()
        if answer.reset:
            self._reset()
        if answer.is_cut:
            self.close_connection = True

    def _reset(self) -> None:
        """End the connection with a TCP RST once this request is handled: a zero linger makes close() drop the
        connection instead of ending it cleanly (FIN); the server then skips its usual shutdown (see below)."""
        self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _ABORT_ON_CLOSE)
        self.close_connection = True

    def _send_body(self, answer: _Answer) -> None:
        if answer.file is None:
            self.wfile.write(answer.body[: answer.sent])
            return
        remaining = answer.sent
        while remaining > 0:
            chunk = answer.file.read(min(CHUNK_BYTES, remaining))
            if not chunk:
                break
            self.wfile.write(chunk)
            remaining -= len(chunk)


def serve(config: SandboxConfig, host: str, port: int) -> None:
    """Run the sandbox in the foreground until interrupted (the CLI's `hatch-pipeline sandbox`)."""
    with SandboxServer(config, host, port) as server:
        print(f"Hatch sandbox serving {server.base_url}/export-data (Ctrl-C to stop)", flush=True)
        with contextlib.suppress(KeyboardInterrupt):
            threading.Event().wait()
