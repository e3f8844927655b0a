"""The GCS ledger store against the session's fake-gcs-server: generation preconditions, retries, processes, no key."""

from __future__ import annotations

from datetime import date, timedelta
from functools import partial
from typing import Any

import pytest
from google.cloud.storage import Blob, Bucket

from hatch_pipeline.contract import ExportWindow
from hatch_pipeline.export_api.gcs_ledger import GcsLedgerStore, LedgerContended
from hatch_pipeline.export_api.ledger import LedgerState, organization_key
from hatch_pipeline.google_clients import storage_client
from hatch_pipeline_tests.export_api.test_ledger import (
    DAY,
    MINUTE,
    ORG,
    T0,
    assert_no_reservation_lost,
    fake_time_ledger,
    reserve_from_processes,
)
from hatch_pipeline_tests.support.gcp_fixtures import LocalGcp

PREFIX = "hatch"


@pytest.fixture
def gcs_endpoint(local_gcp: LocalGcp) -> str:
    return local_gcp.gcs_endpoint


@pytest.fixture
def bucket(gcs_bucket: Bucket) -> str:
    """A fresh bucket's name: stores are built from strings, so that spawned processes can build their own."""
    name: str = gcs_bucket.name
    return name


def gcs_store(endpoint: str, bucket: str) -> GcsLedgerStore:
    """Module-level so a spawned process can build its own client and store from two strings."""
    return GcsLedgerStore(storage_client("test", endpoint), bucket, PREFIX)


def test_a_concurrent_write_is_detected_and_the_change_retried(gcs_endpoint: str, bucket: str) -> None:
    store, rival = gcs_store(gcs_endpoint, bucket), gcs_store(gcs_endpoint, bucket)
    attempts: list[LedgerState] = []

    def reserve_t0_after_a_rival_wrote(state: LedgerState) -> tuple[LedgerState, str]:
        attempts.append(state)
        if len(attempts) == 1:  # the rival writes between our read and our write
            rival.update(ORG, lambda seen: (seen.with_slot(T0 - MINUTE), None))
        return state.with_slot(T0), "reserved"

    assert store.update(ORG, reserve_t0_after_a_rival_wrote) == "reserved"
    assert [attempt.slots for attempt in attempts] == [(), (T0 - MINUTE,)]
    assert store.read(ORG).slots == (T0 - MINUTE, T0)


def test_endless_contention_gives_up_without_writing(gcs_endpoint: str, bucket: str) -> None:
    store = GcsLedgerStore(storage_client("test", gcs_endpoint), bucket, PREFIX, max_attempts=3, sleep=lambda _: None)
    rival = gcs_store(gcs_endpoint, bucket)
    rival_slots = iter(T0 + offset * MINUTE for offset in range(10))

    def always_overtaken(state: LedgerState) -> tuple[LedgerState, None]:
        rival.update(ORG, lambda seen: (seen.with_slot(next(rival_slots)), None))
        return state.with_slot(T0 - DAY / 2), None

    with pytest.raises(LedgerContended, match="after 3 attempts"):
        store.update(ORG, always_overtaken)
    assert store.read(ORG).slots == tuple(T0 + offset * MINUTE for offset in range(3))


def test_processes_with_their_own_clients_never_break_the_limits(gcs_endpoint: str, bucket: str) -> None:
    granted = reserve_from_processes(partial(gcs_store, gcs_endpoint, bucket))
    assert_no_reservation_lost(granted, gcs_store(gcs_endpoint, bucket).read(ORG))


def test_the_stored_object_holds_the_key_hash_never_the_key(gcs_endpoint: str, bucket: str) -> None:
    api_key = "hk_live_very_secret_key"
    ledger, _ = fake_time_ledger(gcs_store(gcs_endpoint, bucket), organization=organization_key(api_key))
    ledger.reserve()
    ledger.record_bytes("contact_history", ExportWindow(date(2026, 11, 1), date(2026, 11, 2)), 10)
    blobs = list(storage_client("test", gcs_endpoint).list_blobs(bucket))
    assert [blob.name for blob in blobs] == [f"{PREFIX}/ledger/{organization_key(api_key)}.json"]
    assert api_key not in blobs[0].download_as_bytes().decode()
    assert api_key not in repr(ledger)
    fresh = gcs_store(gcs_endpoint, bucket).read(organization_key(api_key))
    assert fresh.slots == (T0,)
    assert fresh.bytes_per_day == {"contact_history": {date(2026, 11, 1): 5.0, date(2026, 11, 2): 5.0}}


def test_an_unreadable_object_names_its_location(gcs_endpoint: str, bucket: str) -> None:
    storage_client("test", gcs_endpoint).bucket(bucket).blob(f"{PREFIX}/ledger/{ORG}.json").upload_from_string(
        b"not json"
    )
    with pytest.raises(ValueError, match=rf"gs://{bucket}/{PREFIX}/ledger/{ORG}\.json is unreadable"):
        gcs_store(gcs_endpoint, bucket).read(ORG)


def test_a_missing_bucket_is_named_with_the_fix(gcs_endpoint: str) -> None:
    store = GcsLedgerStore(storage_client("test", gcs_endpoint), "no-such-bucket", PREFIX)
    with pytest.raises(FileNotFoundError, match="gs://no-such-bucket does not exist"):
        store.update(ORG, lambda state: (state.with_slot(T0), None))


def test_an_empty_prefix_puts_the_ledger_at_the_bucket_root(gcs_endpoint: str, bucket: str) -> None:
    assert GcsLedgerStore(storage_client("test", gcs_endpoint), bucket, "/").object_name(ORG) == f"ledger/{ORG}.json"
    assert gcs_store(gcs_endpoint, bucket).object_name(ORG) == f"{PREFIX}/ledger/{ORG}.json"


def test_slots_older_than_a_day_do_not_accumulate(gcs_endpoint: str, bucket: str) -> None:
    ledger, clock = fake_time_ledger(gcs_store(gcs_endpoint, bucket))
    ledger.reserve()
    clock.now += timedelta(hours=25)
    ledger.reserve()
    assert ledger.store.read(ORG).slots == (clock.now,)


def test_a_write_whose_answer_was_lost_is_applied_once(
    gcs_endpoint: str, bucket: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Google's client retries a conditional upload whose answer was lost, and the retry meets a 412 from the write
    that landed. No local server loses an answer, so the upload is wrapped: the first call uploads for real and then
    uploads again, as the client's retry would; the emulator's own 412 comes back."""
    real_upload = Blob.upload_from_string
    uploads: list[str] = []

    def answer_lost_then_retried(blob: Blob, *args: Any, **kwargs: Any) -> None:
        uploads.append(blob.name)
        real_upload(blob, *args, **kwargs)
        if len(uploads) == 1:
            real_upload(blob, *args, **kwargs)

    monkeypatch.setattr(Blob, "upload_from_string", answer_lost_then_retried)
    store = gcs_store(gcs_endpoint, bucket)

    assert store.update(ORG, lambda state: (state.with_slot(T0 - MINUTE), "reserved")) == "reserved"
    store.update(ORG, lambda state: (state.with_slot(T0), None))

    assert store.read(ORG).slots == (T0 - MINUTE, T0)
