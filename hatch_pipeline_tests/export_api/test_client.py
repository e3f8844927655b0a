"""The export client against the sandbox over real HTTP, with a real rate ledger in a temporary folder."""

from __future__ import annotations

import hashlib
import io
import logging
import time
import zipfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import replace
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from hatch_pipeline.contract import ExportWindow
from hatch_pipeline.export_api.base_url import InvalidBaseUrl
from hatch_pipeline.export_api.client import (
    EmptyExport,
    ExportedFile,
    ExportOutcome,
    ExportRetry,
    HatchExportClient,
    NothingToSend,
)
from hatch_pipeline.export_api.errors import (
    AuthenticationFailed,
    ExportFailed,
    HatchExportError,
    InvalidExportRequest,
    PayloadTooLarge,
    RateLimited,
)
from hatch_pipeline.export_api.ledger import Claim, LocalLedgerStore, RateLedger, organization_key
from hatch_pipeline.local.processes import free_port
from hatch_pipeline.local.sandbox.server import AccessRecord, Fault, SandboxServer
from hatch_pipeline_tests.export_api.test_ledger import stored_claims

KEY = "sk-test-5b9f1c2e-client-secret"
"""Distinctive, so a leak anywhere is easy to find."""
ORGANIZATION = "org-client-tests"
TODAY = date(2026, 6, 15)
WINDOW = ExportWindow(date(2026, 6, 1), date(2026, 6, 3))
FAST = ExportRetry(
    max_attempts=3,
    base_delay_seconds=0.01,
    max_delay_seconds=0.05,
    connect_timeout_seconds=2.0,
    read_timeout_seconds=2.0,
)

ClientFactory = Callable[..., HatchExportClient]


@pytest.fixture
def api(sandbox: SandboxServer) -> SandboxServer:
    sandbox.config = replace(sandbox.config, api_keys={KEY: ORGANIZATION}, today=TODAY, rows_per_day=5)
    return sandbox


@pytest.fixture
def ledger(tmp_path: Path) -> RateLedger:
    return RateLedger(
        LocalLedgerStore(tmp_path / "ledger"),
        organization=organization_key(KEY),
        min_interval=timedelta(milliseconds=50),
        max_per_day=1000,
        max_wait=timedelta(seconds=30),
    )


@pytest.fixture
def make_client(api: SandboxServer, ledger: RateLedger) -> Iterator[ClientFactory]:
    clients: list[HatchExportClient] = []

    def make(**overrides: Any) -> HatchExportClient:
        options: dict[str, Any] = {
            "api_key": KEY,
            "base_url": api.base_url,
            "ledger": ledger,
            "retry": FAST,
            "today": lambda: TODAY,
        }
        client = HatchExportClient(**{**options, **overrides})
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.close()


@pytest.fixture
def dest(tmp_path: Path) -> Path:
    return tmp_path / "exports"


def logged(server: SandboxServer, expected: int) -> list[AccessRecord]:
    """The sandbox's access log once it holds `expected` records (or after 30 s): the sandbox records a request
    just after answering it, so the client can be ahead of the log, by seconds on a loaded machine."""
    deadline = time.monotonic() + 30
    while len(server.access_log) < expected and time.monotonic() < deadline:
        time.sleep(0.01)
    return server.access_log


def statuses(server: SandboxServer, expected: int) -> list[int]:
    return [record.status for record in logged(server, expected)]


def reserved_slots(ledger: RateLedger) -> int:
    return len(ledger.store.read(ledger.organization).slots)


def files_in(folder: Path) -> list[str]:
    return sorted(path.name for path in folder.iterdir()) if folder.exists() else []


def exported(outcome: ExportOutcome | NothingToSend) -> ExportedFile:
    assert isinstance(outcome, ExportedFile), outcome
    return outcome


# --- answers of the contract --------------------------------------------------------------------------------------


@pytest.mark.parametrize("output_format", ["json", "csv"])
def test_200_keeps_the_zip_as_received_under_its_contract_name(
    make_client: ClientFactory, api: SandboxServer, ledger: RateLedger, dest: Path, output_format: str
) -> None:
    result = exported(make_client(output_format=output_format).export("contact_history", WINDOW, dest))

    stem = "contact_history_2026-06-01_2026-06-03"
    assert result.path == dest / f"{stem}.zip"
    assert files_in(dest) == [f"{stem}.zip"]  # no temp file left behind
    body = result.path.read_bytes()
    assert result.sha256 == hashlib.sha256(body).hexdigest()
    assert result.compressed_bytes == len(body)
    with zipfile.ZipFile(result.path) as archive:
        assert archive.namelist() == [f"{stem}.{output_format}"] == [result.member_name]
        assert result.uncompressed_bytes == archive.infolist()[0].file_size > 0
    assert (result.output_format, result.attempts) == (output_format, 1)
    assert [(r.status, r.output_format) for r in logged(api, 1)] == [(200, None if output_format == "json" else "csv")]
    observed = ledger.observed_bytes_per_day("contact_history")
    assert sorted(observed) == list(WINDOW.dates())
    assert sum(observed.values()) == pytest.approx(result.uncompressed_bytes)


def test_204_is_an_empty_export_and_teaches_the_ledger_zero_bytes(
    make_client: ClientFactory, api: SandboxServer, ledger: RateLedger, dest: Path
) -> None:
    api.config = replace(api.config, empty_days=frozenset(WINDOW.dates()))

    outcome = make_client().export("conversation_items", WINDOW, dest)

    assert outcome == EmptyExport(
        "conversation_items",
        WINDOW,
        waited_seconds=outcome.waited_seconds,
        attempts=1,
        claim_owner=outcome.claim_owner,
    )
    assert files_in(dest) == []
    assert ledger.observed_bytes_per_day("conversation_items") == dict.fromkeys(WINDOW.dates(), 0.0)


def test_400_carries_the_servers_message_and_is_not_retried(
    make_client: ClientFactory, api: SandboxServer, dest: Path
) -> None:
    # The server's today is earlier than the client's, so the client finds nothing wrong but the server does.
    api.config = replace(api.config, today=TODAY - timedelta(days=10))
    window = ExportWindow(TODAY - timedelta(days=3), TODAY - timedelta(days=1))

    with pytest.raises(InvalidExportRequest, match=r"HTTP 400.*not before today \(2026-06-05\)"):
        make_client().export("contact_history", window, dest)
    assert statuses(api, 1) == [400]


def test_401_tells_the_user_to_check_the_key_and_is_not_retried(
    make_client: ClientFactory, api: SandboxServer, dest: Path
) -> None:
    with pytest.raises(AuthenticationFailed) as failure:
        make_client(api_key="sk-test-not-a-known-key").export("contact_history", WINDOW, dest)

    assert "HATCH_API_KEY" in str(failure.value)
    assert "Bulk Export API is enabled" in str(failure.value)
    assert [(r.status, r.organization_id) for r in logged(api, 1)] == [(401, None)]


def test_413_raises_payload_too_large_and_records_no_size(
    make_client: ClientFactory, api: SandboxServer, ledger: RateLedger, dest: Path
) -> None:
    api.config = replace(api.config, max_payload_bytes=200)

    with pytest.raises(PayloadTooLarge) as failure:
        make_client(max_payload_bytes=1_000_000).export("contact_history", WINDOW, dest)

    assert (failure.value.source, failure.value.window) == ("contact_history", WINDOW)
    assert statuses(api, 1) == [413]
    assert ledger.observed_bytes_per_day("contact_history") == {}, "a lower bound is not a measurement"


def test_a_zip_declaring_more_than_the_payload_limit_is_refused_before_decompressing(
    make_client: ClientFactory, api: SandboxServer, dest: Path
) -> None:
    with pytest.raises(PayloadTooLarge):
        make_client(max_payload_bytes=1000).export("contact_history", WINDOW, dest)

    assert statuses(api, 1) == [200]
    assert files_in(dest) == []


def test_decide_narrows_the_request_when_the_slot_comes(
    make_client: ClientFactory, api: SandboxServer, ledger: RateLedger, dest: Path
) -> None:
    first_day = ExportWindow(WINDOW.start, WINDOW.start)

    outcome = exported(make_client().export("contact_history", WINDOW, dest, decide=lambda claims: first_day))

    assert outcome.window == first_day
    assert [(record.start_date, record.end_date) for record in logged(api, 1)] == [(str(WINDOW.start),) * 2]
    [claim] = stored_claims(ledger)
    assert (claim.window, claim.owner) == (first_day, outcome.claim_owner)


def test_nothing_left_to_send_sends_nothing_and_holds_no_slot(
    make_client: ClientFactory, api: SandboxServer, ledger: RateLedger, dest: Path
) -> None:
    outcome = make_client().export("contact_history", WINDOW, dest, decide=lambda claims: None)

    assert isinstance(outcome, NothingToSend) and outcome.window == WINDOW
    assert api.access_log == []
    assert reserved_slots(ledger) == 0
    assert stored_claims(ledger) == []


# --- 429: waiting out the vendor's rate limit ----------------------------------------------------------------------


@pytest.mark.parametrize("send_retry_after", [True, False], ids=["retry-after", "no-retry-after"])
def test_429_waits_and_then_succeeds(
    make_client: ClientFactory, api: SandboxServer, ledger: RateLedger, dest: Path, send_retry_after: bool
) -> None:
    # The sandbox's interval is longer than the ledger's, as when another tool shares the organization's quota.
    api.config = replace(api.config, min_export_interval_seconds=0.5, send_retry_after=send_retry_after)
    client = make_client()
    exported(client.export("contact_history", WINDOW, dest))

    second = exported(client.export("conversation_items", WINDOW, dest))

    assert second.attempts >= 2
    assert statuses(api, second.attempts + 1) == [200, *[429] * (second.attempts - 1), 200]
    # The vendor counted two exports; each 429's slot was given back, so the ledger holds exactly those two.
    assert reserved_slots(ledger) == 2


def test_a_429s_retry_after_holds_every_client_sharing_the_ledger(
    make_client: ClientFactory, api: SandboxServer, ledger: RateLedger, dest: Path
) -> None:
    api.config = replace(api.config, min_export_interval_seconds=1.0)
    client = make_client()
    exported(client.export("contact_history", WINDOW, dest))
    api.inject(Fault(status=429, retry_after=1))

    exported(client.export("conversation_items", WINDOW, dest))

    second, third = [record.at for record in logged(api, 3)[1:]]
    assert (third - second).total_seconds() >= 1.0
    assert ledger.next_slot() >= third  # the block is stored for everyone, not only for this client


@pytest.mark.parametrize("send_retry_after", [True, False], ids=["retry-after", "no-retry-after"])
def test_429_forever_stops_within_the_ledgers_wait_budget(
    make_client: ClientFactory, api: SandboxServer, tmp_path: Path, dest: Path, send_retry_after: bool
) -> None:
    api.config = replace(api.config, min_export_interval_seconds=3600, send_retry_after=send_retry_after)
    ledger = RateLedger(
        LocalLedgerStore(tmp_path / "short-wait"),
        organization=organization_key(KEY),
        min_interval=timedelta(milliseconds=50),
        max_per_day=1000,
        max_wait=timedelta(seconds=0.3),
    )
    client = make_client(ledger=ledger)
    exported(client.export("contact_history", WINDOW, dest))

    with pytest.raises(RateLimited, match="HTTP 429") as stopped:
        client.export("conversation_items", WINDOW, dest)

    assert "run again after" in str(stopped.value) and stopped.value.opens_at is not None
    rate_limited = statuses(api, 2)[1:]
    assert rate_limited and set(rate_limited) == {429}
    assert reserved_slots(ledger) == 1, "429s were not counted by the vendor, so they hold no slot"
    if send_retry_after:
        assert len(rate_limited) == 1  # an hour's Retry-After is beyond the budget: no pointless second try


# --- transient failures: retried with backoff, bounded -------------------------------------------------------------


def test_500_twice_then_success(make_client: ClientFactory, api: SandboxServer, ledger: RateLedger, dest: Path) -> None:
    api.inject(Fault(status=500), Fault(status=500))

    result = exported(make_client().export("contact_history", WINDOW, dest))

    assert result.attempts == 3
    assert statuses(api, 3) == [500, 500, 200]
    assert reserved_slots(ledger) == 3


def test_500_forever_raises_export_failed_naming_the_cause_and_attempts(
    make_client: ClientFactory, api: SandboxServer, ledger: RateLedger, dest: Path
) -> None:
    api.inject(*[Fault(status=500)] * 5)

    with pytest.raises(ExportFailed, match=r"after 3 attempts; last cause: HTTP 500: injected fault"):
        make_client().export("contact_history", WINDOW, dest)

    assert statuses(api, 3) == [500, 500, 500]
    assert reserved_slots(ledger) == 3


def test_a_connection_that_never_opens_counts_nothing_in_the_ledger(
    make_client: ClientFactory, ledger: RateLedger, dest: Path
) -> None:
    nobody_listens = f"http://127.0.0.1:{free_port()}/api/v1"

    with pytest.raises(ExportFailed, match=r"after 3 attempts; last cause: ConnectError"):
        make_client(base_url=nobody_listens).export("contact_history", WINDOW, dest)

    assert reserved_slots(ledger) == 0
    assert stored_claims(ledger) == []


def test_a_retry_after_a_500_keeps_its_claim_and_never_waits_for_itself(
    make_client: ClientFactory, api: SandboxServer, ledger: RateLedger, dest: Path
) -> None:
    api.inject(Fault(status=500))
    seen_claims: list[int] = []

    def whole_window_unless_claimed(claims: Sequence[Claim]) -> ExportWindow | None:
        seen_claims.append(len(claims))
        return None if claims else WINDOW

    result = exported(make_client().export("contact_history", WINDOW, dest, decide=whole_window_unless_claimed))

    assert (result.attempts, seen_claims) == (2, [0, 0])
    assert [claim.owner for claim in stored_claims(ledger)] == [result.claim_owner]
    ledger.release(result.claim_owner)
    assert stored_claims(ledger) == []
    assert reserved_slots(ledger) == len(statuses(api, 2)) == 2


def test_a_response_slower_than_the_read_timeout_is_retried(
    make_client: ClientFactory, api: SandboxServer, dest: Path, caplog: pytest.LogCaptureFixture
) -> None:
    api.inject(Fault(slow=1.0))
    caplog.set_level(logging.INFO, logger="hatch_pipeline.export_api.client")

    result = exported(
        make_client(retry=replace(FAST, read_timeout_seconds=0.2)).export("contact_history", WINDOW, dest)
    )

    assert result.attempts == 2
    assert "ReadTimeout" in caplog.records[0].getMessage()


def test_a_cut_off_body_is_retried_and_leaves_no_partial_file(
    make_client: ClientFactory, api: SandboxServer, ledger: RateLedger, dest: Path
) -> None:
    api.inject(Fault(cut=0.5))

    result = exported(make_client().export("contact_history", WINDOW, dest))

    assert result.attempts == 2
    assert files_in(dest) == [result.path.name]
    assert statuses(api, 2) == [200, 200]
    assert reserved_slots(ledger) == 2


def test_a_corrupt_body_is_retried_once_since_each_retry_spends_an_export(
    make_client: ClientFactory, api: SandboxServer, ledger: RateLedger, dest: Path
) -> None:
    api.inject(*[Fault(corrupt=True)] * 3)

    with pytest.raises(ExportFailed, match=r"arrived broken 2 times \(last: CorruptExport: the body is not a valid"):
        make_client().export("contact_history", WINDOW, dest)

    assert files_in(dest) == []
    assert reserved_slots(ledger) == len(logged(api, 2)) == 2


# --- local validation: nothing is sent, no slot is spent -----------------------------------------------------------


@pytest.mark.parametrize(
    ("source", "window", "rule"),
    [
        ("contacts", WINDOW, "unknown data_source 'contacts'"),
        ("contact_history", ExportWindow(TODAY - timedelta(days=180), TODAY - timedelta(days=0)), "at most 180 days"),
        (
            "contact_history",
            ExportWindow(TODAY - timedelta(days=181), TODAY - timedelta(days=170)),
            "more than 180 days back",
        ),
        ("contact_history", ExportWindow(TODAY - timedelta(days=2), TODAY), "is not before today"),
    ],
    ids=["unknown-source", "too-long", "too-far-back", "not-before-today"],
)
def test_each_contract_rule_is_checked_before_any_request(
    make_client: ClientFactory,
    api: SandboxServer,
    ledger: RateLedger,
    dest: Path,
    source: str,
    window: ExportWindow,
    rule: str,
) -> None:
    with pytest.raises(InvalidExportRequest, match=rule.replace("(", r"\(")):
        make_client().export(source, window, dest)

    assert api.access_log == []
    assert reserved_slots(ledger) == 0


def test_local_validation_lists_every_broken_rule(make_client: ClientFactory, api: SandboxServer, dest: Path) -> None:
    with pytest.raises(InvalidExportRequest) as failure:
        make_client().export("contacts", ExportWindow(TODAY - timedelta(days=2), TODAY), dest)

    assert "unknown data_source" in str(failure.value)
    assert "is not before today" in str(failure.value)


# --- the key stays secret --------------------------------------------------------------------------------------


def test_the_key_appears_in_no_error_repr_log_or_file(
    make_client: ClientFactory,
    api: SandboxServer,
    ledger: RateLedger,
    tmp_path: Path,
    dest: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)  # every logger, httpx and httpcore included
    wrong_key = "sk-test-wrong-9d3e7a-secret"
    client = make_client()
    errors: list[HatchExportError] = []
    exported(client.export("contact_history", WINDOW, dest))
    api.inject(Fault(corrupt=True), Fault(corrupt=True))
    failing: list[Callable[[], ExportOutcome]] = [
        lambda: client.export("conversation_items", WINDOW, dest),
        lambda: make_client(api_key=wrong_key).export("contact_history", WINDOW, dest),
        lambda: client.export("contact_history", ExportWindow(TODAY, TODAY), dest),
    ]
    for export in failing:
        with pytest.raises(HatchExportError) as failure:
            export()
        errors.append(failure.value)

    assert [type(error) for error in errors] == [ExportFailed, AuthenticationFailed, InvalidExportRequest]
    texts = [str(error) for error in errors] + [repr(error) for error in errors]
    client_lines = [r for r in caplog.records if r.name == "hatch_pipeline.export_api.client"]
    texts += [repr(client), repr(ledger), repr(logged(api, len(client_lines))), caplog.text]
    texts += [record.getMessage() for record in caplog.records]
    for secret in (KEY, wrong_key):
        assert not [text for text in texts if secret in text]
        assert not [path for path in tmp_path.rglob("*") if path.is_file() and secret.encode() in path.read_bytes()]
    assert len(client_lines) == len(api.access_log)  # one line per attempt


def test_a_key_that_cannot_travel_in_a_header_is_refused_without_echoing_it(ledger: RateLedger) -> None:
    with pytest.raises(ValueError, match="HATCH_API_KEY") as failure:
        HatchExportClient(api_key="sk-test\nInjected: header", base_url="https://example.com/api/v1", ledger=ledger)

    assert "Injected" not in str(failure.value)


@pytest.mark.parametrize("url", ["http://bulk-export-api.example.com/api/v1", "ftp://127.0.0.1/api/v1"])
def test_a_base_url_that_would_expose_the_key_is_refused(ledger: RateLedger, url: str) -> None:
    with pytest.raises(InvalidBaseUrl, match="HATCH_API_BASE_URL"):
        HatchExportClient(api_key=KEY, base_url=url, ledger=ledger)


# --- bodies no honest server sends ------------------------------------------------------------------------------
# The sandbox honours the contract, so it cannot send a ZIP with the wrong member, a path in a member name, or a
# server message echoing the key; an httpx.MockTransport stands in for such a server here.


def zip_of(*members: tuple[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in members:
            archive.writestr(name, data)
    return buffer.getvalue()


def serving(status: int, body: bytes, seen: list[httpx.Request] | None = None) -> httpx.MockTransport:
    def answer(request: httpx.Request) -> httpx.Response:
        if seen is not None:
            seen.append(request)
        return httpx.Response(status, content=body)

    return httpx.MockTransport(answer)


MEMBER = "contact_history_2026-06-01_2026-06-03.json"


@pytest.mark.parametrize(
    "body",
    [
        zip_of((MEMBER, b"{}\n"), ("extra.json", b"{}\n")),
        zip_of(("conversation_items_2026-06-01_2026-06-03.json", b"{}\n")),
        zip_of((MEMBER.replace(".json", ".csv"), b"a\n")),
        zip_of((f"../{MEMBER}", b"{}\n")),
        zip_of((f"nested/{MEMBER}", b"{}\n")),
    ],
    ids=["two-members", "wrong-source", "wrong-format", "parent-path", "directory"],
)
def test_a_zip_not_holding_exactly_the_promised_file_is_rejected(
    make_client: ClientFactory, tmp_path: Path, dest: Path, body: bytes
) -> None:
    client = make_client(
        base_url="http://127.0.0.1:9/api/v1", transport=serving(200, body), retry=replace(FAST, max_attempts=1)
    )

    with pytest.raises(ExportFailed, match="promises exactly one file"):
        client.export("contact_history", WINDOW, dest)

    assert files_in(dest) == []
    assert not (tmp_path / MEMBER).exists()


def test_a_zip_bomb_is_refused_without_inflating_it(make_client: ClientFactory, dest: Path) -> None:
    bomb = zip_of((MEMBER, b"\0" * 20_000_000))
    client = make_client(
        base_url="http://127.0.0.1:9/api/v1", transport=serving(200, bomb), max_payload_bytes=1_000_000
    )

    with pytest.raises(PayloadTooLarge):
        client.export("contact_history", WINDOW, dest)

    assert len(bomb) < 100_000 and files_in(dest) == []


def test_requests_carry_the_key_only_in_the_authorization_header(make_client: ClientFactory, dest: Path) -> None:
    seen: list[httpx.Request] = []
    echo = f'{{"error": "bad request for key {KEY}"}}'.encode()
    client = make_client(base_url="http://127.0.0.1:9/api/v1", transport=serving(400, echo, seen))

    with pytest.raises(InvalidExportRequest) as failure:
        client.export("contact_history", WINDOW, dest)

    assert KEY not in str(failure.value) and "[API key]" in str(failure.value)
    (request,) = seen
    assert request.headers["Authorization"] == f"Bearer {KEY}"
    assert request.headers["User-Agent"].startswith("hatch-pipeline/")
    assert KEY not in str(request.url)
    assert dict(request.url.params) == {
        "data_source": "contact_history",
        "start_date": "2026-06-01",
        "end_date": "2026-06-03",
    }
