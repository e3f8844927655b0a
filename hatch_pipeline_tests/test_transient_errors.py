"""`warehouse.is_transient`: which BigQuery failures are worth running the step again for.

Where a local server can produce the error, the error object comes from Google's client talking to it: the
emulator's answers to real mistakes, and BigQuery's answer to a transaction aborted by a concurrent one through
`BigQueryProxy` (bqemulator runs jobs one at a time, so it never aborts one). 5xx and rate limits are built with
`google.api_core.exceptions.from_http_status`, as the client builds them from an HTTP status or a job's error
reason: no local server answers them without the client first retrying them for ten minutes.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from google.api_core import exceptions
from google.cloud import bigquery

from hatch_pipeline.google_clients import bigquery_client
from hatch_pipeline.warehouse import LoadFailed, ParquetReplaced, RowsOutsideDays, is_transient
from hatch_pipeline_tests.support.bigquery_proxy import BigQueryProxy
from hatch_pipeline_tests.support.gcp_fixtures import LocalGcp


@pytest.fixture
def proxy(local_gcp: LocalGcp) -> Iterator[BigQueryProxy]:
    with BigQueryProxy(local_gcp.bigquery_endpoint) as running:
        yield running


def raised_by(client: bigquery.Client, sql: str) -> exceptions.GoogleAPICallError:
    with pytest.raises(exceptions.GoogleAPICallError) as caught:
        client.query(sql).result()
    return caught.value


def test_a_transaction_aborted_by_a_concurrent_update_is_transient(
    proxy: BigQueryProxy, local_gcp: LocalGcp, bq_dataset: str
) -> None:
    client = bigquery_client(local_gcp.project, local_gcp.location, proxy.endpoint)
    table = f"`{local_gcp.project}.{bq_dataset}.days`"
    client.query(f"CREATE TABLE {table} (day DATE)").result()
    proxy.abort_next_transactions(1)
    script = f"BEGIN TRANSACTION;\nDELETE FROM {table} WHERE TRUE;\nCOMMIT TRANSACTION;"

    error = raised_by(client, script)
    client.query(script).result()  # the same script, run again, succeeds

    assert isinstance(error, exceptions.BadRequest)
    assert "Transaction is aborted due to concurrent update" in error.message
    assert is_transient(error)


def test_the_emulators_answers_to_real_mistakes_are_not_transient(bq_client: bigquery.Client, bq_dataset: str) -> None:
    missing_table = raised_by(bq_client, f"SELECT * FROM `{bq_client.project}.{bq_dataset}.no_such_table`")
    bad_sql = raised_by(bq_client, "SELEKT 1")

    assert not is_transient(missing_table)
    assert not is_transient(bad_sql)


@pytest.mark.parametrize(
    ("status", "reason", "message"),
    [
        (500, "backendError", "Error encountered during execution. Retrying may solve the problem."),
        (502, None, "Bad Gateway"),
        (503, None, "The service is currently unavailable."),
        (504, None, "Deadline exceeded"),
        (429, "rateLimitExceeded", "Exceeded rate limits: too many api requests per user per method"),
        (403, "rateLimitExceeded", "Exceeded rate limits: too many table update operations for this table"),
        (400, "invalidQuery", "Could not serialize access to table p:d.t due to concurrent update"),
    ],
)
def test_server_errors_rate_limits_and_conflicts_are_transient(status: int, reason: str | None, message: str) -> None:
    error = api_error(status, reason, message)

    assert is_transient(error)
    assert is_transient(exceptions.RetryError("Deadline of 600.0s exceeded", cause=error))  # type: ignore[no-untyped-call]
    assert is_transient(_raised_from(LoadFailed("BigQuery could not load 3 Parquet file(s)"), error))


@pytest.mark.parametrize(
    ("status", "reason", "message"),
    [
        (501, "notImplemented", "This feature is not implemented"),
        (403, "quotaExceeded", "Quota exceeded: Your table exceeded quota for number of partition modifications"),
        (403, "accessDenied", "Access Denied: Table p:d.t: Permission bigquery.tables.updateData denied"),
        (400, "invalid", "Provided Schema does not match Table p:d.t"),
        (404, "notFound", "Not found: Table p:d.t"),
    ],
)
def test_errors_that_come_back_the_same_are_not_transient(status: int, reason: str, message: str) -> None:
    error = api_error(status, reason, message)

    assert not is_transient(error)
    assert not is_transient(_raised_from(LoadFailed("BigQuery could not load 3 Parquet file(s)"), error))


def test_parquet_files_replaced_under_a_load_are_transient() -> None:
    """What a load raises when newer builds of its days kept retiring its files (test_bigquery_retries.py)."""
    error = ParquetReplaced("newer builds of hatch/parquet/contact_history replaced the Parquet files")

    assert is_transient(error)
    assert is_transient(_raised_from(error, LoadFailed("BigQuery could not load 1 Parquet file(s)")))


def test_the_warehouses_own_refusals_are_not_transient() -> None:
    assert not is_transient(RowsOutsideDays("the Parquet files hold rows for 2026-11-02"))
    assert not is_transient(ValueError("'bad name' is not a BigQuery dataset name"))


def api_error(status: int, reason: str | None, message: str) -> exceptions.GoogleAPICallError:
    """The exception Google's client raises for an HTTP `status` or a job error with `reason`."""
    error: exceptions.GoogleAPICallError = exceptions.from_http_status(  # type: ignore[no-untyped-call]
        status, message, errors=[{"reason": reason, "message": message}]
    )
    return error


def _raised_from(error: Exception, cause: Exception) -> Exception:
    """`error` as `raise error from cause` leaves it."""
    try:
        raise error from cause
    except Exception as raised:
        return raised
