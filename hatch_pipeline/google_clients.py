"""Google's BigQuery and Cloud Storage clients, for Google or for a local emulator.

Given an emulator's host, a client gets anonymous credentials and the emulator's endpoint: Google's BigQuery client
reads BIGQUERY_EMULATOR_HOST but still asks for Application Default Credentials, which fail where there are none (a
laptop, a CI machine). Without one, the clients use Application Default Credentials as usual.
"""

from __future__ import annotations

from google.api_core.client_options import ClientOptions
from google.auth.credentials import AnonymousCredentials
from google.cloud import bigquery
from google.cloud.storage import Client as StorageClient


def bigquery_client(project: str, location: str, emulator_host: str | None) -> bigquery.Client:
    """A BigQuery client for Google (Application Default Credentials) or, given `emulator_host`, an emulator.

    The client library honours BIGQUERY_EMULATOR_HOST but still asks for default credentials, which fail offline,
    so the emulator gets anonymous credentials and its endpoint explicitly.
    """
    if not emulator_host:
        return bigquery.Client(project=project, location=location)
    return bigquery.Client(
        project=project,
        location=location,
        credentials=AnonymousCredentials(),  # type: ignore[no-untyped-call]
        client_options=ClientOptions(api_endpoint=emulator_url(emulator_host)),
    )


def storage_client(project: str | None, emulator_host: str | None) -> StorageClient:
    """A Cloud Storage client for Google (Application Default Credentials) or, given `emulator_host`, an emulator.

    Without a project, Google's client takes the one of the default credentials; an emulator's client gets none
    (it would otherwise look for default credentials to find one, and fail offline).
    """
    if not emulator_host:
        return StorageClient() if project is None else StorageClient(project=project)
    return StorageClient(
        project=project,
        credentials=AnonymousCredentials(),  # type: ignore[no-untyped-call]
        client_options=ClientOptions(api_endpoint=emulator_url(emulator_host)),
    )


def emulator_url(emulator_host: str) -> str:
    """Accept `host:port` (the gcloud convention) as well as a URL; the client libraries need the scheme."""
    url = emulator_host if "://" in emulator_host else f"http://{emulator_host}"
    return url.rstrip("/")
