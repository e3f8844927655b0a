"""A pass-through HTTP proxy in front of the BigQuery emulator that can hold or abort transaction scripts.

No local server produces what these tests need from BigQuery: bqemulator runs every job on one DuckDB connection,
one after the other (two sessions' transactions on one table give "cannot start a transaction within a
transaction", never a conflict), so it can neither show that two loads overlap nor answer a load with BigQuery's
"Transaction is aborted due to concurrent update". This proxy forwards every request unchanged to the emulator and
watches only the jobs whose query holds a transaction (`BEGIN TRANSACTION`, the day replacement): it can hold them
until released, so a test sees which loads are in BigQuery at the same time, and it can answer the next ones as
BigQuery answers a transaction aborted by a concurrent one (a finished job with an `invalidQuery` error result).
It can also run a test's action when a load job arrives, before the emulator sees it (e.g. a newer Parquet build
that retires the files the load names), so a race between two steps happens in a chosen order.
Everything else, including the answers the client parses, comes from the emulator. It also records, without
changing them, every query the client sends and every table it creates (`queries`, `created_tables`), so a test can
check that SQL with Google's own analyzer (see bigquery_analyzer.py).
"""

from __future__ import annotations

import json
import threading
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Final

import httpx

CONCURRENT_UPDATE: Final = (
    "Transaction is aborted due to concurrent update against table {table}. Transaction ID: {transaction}"
)
"""BigQuery's message when another transaction changed the table first (its error reason is `invalidQuery`)."""
_HOP_BY_HOP: Final = frozenset({"connection", "content-length", "content-encoding", "transfer-encoding", "host"})


@dataclass(frozen=True)
class SentQuery:
    """A query job or `jobs.query` call as the client sent it: the SQL and its parameters' types, in the REST API's
    form (e.g. `{"type": "ARRAY", "arrayType": {"type": "DATE"}}`)."""

    sql: str
    parameter_types: dict[str, Any]
    dry_run: bool


@dataclass(frozen=True)
class CreatedTable:
    """A table the client created through the tables API: `project.dataset.table` and its columns' types."""

    table_id: str
    columns: dict[str, str]


@dataclass(frozen=True)
class Transaction:
    """A transaction script that reached the proxy: which table it replaces days in, and what became of it."""

    table: str
    aborted: bool


class BigQueryProxy:
    """Listens on 127.0.0.1 and a free port; `endpoint` is what BIGQUERY_EMULATOR_HOST should name."""

    def __init__(self, upstream: str) -> None:
        self._upstream = httpx.Client(base_url=upstream, timeout=120)
        self._lock = threading.Condition()
        self._arrived: list[Transaction] = []
        self._in_flight = 0
        self._held = False
        self._aborts_left = 0
        self._aborted_jobs: dict[str, dict[str, Any]] = {}
        self._queries: list[SentQuery] = []
        self._created_tables: list[CreatedTable] = []
        self._before_loads: list[Callable[[], None]] = []
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def endpoint(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def __enter__(self) -> BigQueryProxy:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.release()
        self._server.shutdown()
        self._server.server_close()
        self._upstream.close()

    @contextmanager
    def holding_transactions(self) -> Iterator[None]:
        """Transactions that arrive inside the block wait in the proxy until it ends (or `release`)."""
        with self._lock:
            self._held = True
        try:
            yield
        finally:
            self.release()

    def release(self) -> None:
        with self._lock:
            self._held = False
            self._lock.notify_all()

    def abort_next_transactions(self, count: int) -> None:
        """Answer the next `count` transactions as BigQuery answers one aborted by a concurrent update."""
        with self._lock:
            self._aborts_left = count

    def before_next_loads(self, count: int, action: Callable[[], None]) -> None:
        """Run `action` when each of the next `count` load jobs arrives, then pass the job on to the emulator."""
        with self._lock:
            self._before_loads = [action] * count

    def wait_for_in_flight(self, count: int, timeout: float = 180.0) -> None:
        """Wait until `count` transactions are in the proxy at the same time; fail after `timeout` seconds."""
        with self._lock:
            if not self._lock.wait_for(lambda: self._in_flight >= count, timeout):
                raise AssertionError(f"{count} transaction(s) never were in BigQuery together: {self._arrived}")

    @property
    def transactions(self) -> list[Transaction]:
        with self._lock:
            return list(self._arrived)

    @property
    def queries(self) -> list[SentQuery]:
        """Every query that reached the proxy, in order of arrival (a job the client sent again, again)."""
        with self._lock:
            return list(self._queries)

    @property
    def created_tables(self) -> list[CreatedTable]:
        with self._lock:
            return list(self._created_tables)

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                proxy._serve(self)

            def do_POST(self) -> None:
                proxy._serve(self)

            def do_PUT(self) -> None:
                proxy._serve(self)

            def do_PATCH(self) -> None:
                proxy._serve(self)

            def do_DELETE(self) -> None:
                proxy._serve(self)

        return Handler

    def _serve(self, request: BaseHTTPRequestHandler) -> None:
        body = request.rfile.read(int(request.headers.get("Content-Length") or 0))
        if request.command == "POST":
            self._record(request.path.split("?", 1)[0].rstrip("/"), body)
        aborted = self._aborted_job(request.path)
        if aborted is not None:
            self._answer(request, *aborted)
            return
        if _is_load_job(request.command, body):
            with self._lock:
                action = self._before_loads.pop(0) if self._before_loads else None
            if action is not None:
                action()
        table = _transaction_table(request.command, body)
        if table is None:
            self._forward(request, body)
            return
        with self._lock:
            abort = self._aborts_left > 0
            self._aborts_left -= int(abort)
            self._arrived.append(Transaction(table, abort))
        if abort:
            self._answer(request, *self._abort(body, table))
            return
        with self._lock:
            self._in_flight += 1
            self._lock.notify_all()
            self._lock.wait_for(lambda: not self._held)
        try:
            self._forward(request, body)
        finally:
            with self._lock:
                self._in_flight -= 1

    def _record(self, path: str, body: bytes) -> None:
        """Keep the query of a `jobs.insert` or `jobs.query` call, or the table of a `tables.insert` call."""
        if not path.endswith(("/jobs", "/queries", "/tables")) or "/upload/" in path:
            return  # not one of those, or a load job's media upload (not JSON)
        document = json.loads(body)
        if path.endswith("/tables"):
            reference = document["tableReference"]
            columns = {field["name"]: field["type"] for field in document.get("schema", {}).get("fields", [])}
            table_id = f"{reference['projectId']}.{reference['datasetId']}.{reference['tableId']}"
            with self._lock:
                self._created_tables.append(CreatedTable(table_id, columns))
            return
        # jobs.insert nests the query and dryRun in `configuration`; jobs.query has them at the top.
        configuration = document.get("configuration", document)
        query = configuration.get("query") if path.endswith("/jobs") else document
        if query is None:
            return  # a load or copy job
        parameters = {parameter["name"]: parameter["parameterType"] for parameter in query.get("queryParameters", [])}
        with self._lock:
            self._queries.append(SentQuery(query["query"], parameters, bool(configuration.get("dryRun"))))

    def _abort(self, body: bytes, table: str) -> tuple[int, dict[str, Any]]:
        """A finished job whose error result is BigQuery's transaction conflict; later reads of it say the same."""
        job = json.loads(body)
        reference = {**job.get("jobReference", {}), "jobId": job.get("jobReference", {}).get("jobId", uuid.uuid4().hex)}
        error = {
            "reason": "invalidQuery",
            "location": "query",
            "message": CONCURRENT_UPDATE.format(table=table, transaction=uuid.uuid4()),
        }
        resource = {
            "kind": "bigquery#job",
            "id": f"{reference.get('projectId')}:{reference['jobId']}",
            "jobReference": reference,
            "configuration": job.get("configuration", {}),
            "status": {"state": "DONE", "errorResult": error, "errors": [error]},
        }
        with self._lock:
            self._aborted_jobs[reference["jobId"]] = {
                "jobs": (200, resource),
                "queries": (400, {"error": {"code": 400, "message": error["message"], "errors": [error]}}),
            }
        return 200, resource

    def _aborted_job(self, path: str) -> tuple[int, dict[str, Any]] | None:
        parts = path.split("?", 1)[0].strip("/").split("/")
        if len(parts) < 2 or parts[-2] not in ("jobs", "queries"):
            return None
        with self._lock:
            answers = self._aborted_jobs.get(parts[-1])
        return None if answers is None else answers[parts[-2]]

    def _answer(self, request: BaseHTTPRequestHandler, status: int, document: dict[str, Any]) -> None:
        payload = json.dumps(document).encode()
        request.send_response(status)
        request.send_header("Content-Type", "application/json; charset=UTF-8")
        request.send_header("Content-Length", str(len(payload)))
        request.end_headers()
        request.wfile.write(payload)

    def _forward(self, request: BaseHTTPRequestHandler, body: bytes) -> None:
        headers = {name: value for name, value in request.headers.items() if name.lower() not in _HOP_BY_HOP}
        response = self._upstream.request(request.command, request.path, content=body, headers=headers)
        request.send_response(response.status_code)
        for name, value in response.headers.items():
            if name.lower() not in _HOP_BY_HOP:
                request.send_header(name, value)
        request.send_header("Content-Length", str(len(response.content)))
        request.end_headers()
        request.wfile.write(response.content)


def _is_load_job(method: str, body: bytes) -> bool:
    """Whether the call inserts a load job (the client posts it with its configuration)."""
    return method == "POST" and b'"load"' in body and "load" in json.loads(body).get("configuration", {})


def _transaction_table(method: str, body: bytes) -> str | None:
    """The table a `BEGIN TRANSACTION` query job replaces days in (from its DELETE), or None for any other call."""
    if method != "POST" or b"BEGIN TRANSACTION" not in body:
        return None
    query: str = json.loads(body).get("configuration", {}).get("query", {}).get("query", "")
    for line in query.splitlines():
        if line.startswith("DELETE FROM `"):
            return line.removeprefix("DELETE FROM `").split("`", 1)[0]
    return None
