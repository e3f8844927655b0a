"""The rate ledger's durable state in Google Cloud Storage, next to the exported data.

One JSON object per organization. Atomicity comes from GCS generation preconditions rather than a lock: the
object is read together with its generation and written back only if that generation is still current
(`if_generation_match`, 0 meaning "must not exist yet"). A 412 means someone else wrote in between; the change is
re-applied to the fresh state, so no reservation is ever lost, on any number of machines.

A 412 can also mean that *our own* write landed: Google's client retries a conditional upload whose answer was lost,
and the retry then meets the generation its first try created. Each write therefore stores a token in the state;
before applying the change again, the store looks for its token, so a change is never applied twice (one export
holding two slots).
"""

from __future__ import annotations

import random
import time
import uuid
from collections.abc import Callable
from typing import Any, Final, TypeVar

from google.api_core.exceptions import NotFound, PreconditionFailed
from google.cloud import storage

from hatch_pipeline.export_api.errors import HatchExportError
from hatch_pipeline.export_api.ledger import LedgerState, require_organization_key

T = TypeVar("T")

DEFAULT_MAX_ATTEMPTS: Final = 20
"""Enough for a handful of processes reserving at the same moment; beyond that something is reserving in a loop."""

_BACKOFF_BASE_SECONDS: Final = 0.02
_BACKOFF_CAP_SECONDS: Final = 1.0


class LedgerContended(HatchExportError):
    """Other writers changed the ledger object on every attempt; nothing was written by this one."""


class GcsLedgerStore:
    """Ledger state at gs://{bucket}/{prefix}/ledger/{organization}.json, updated with generation preconditions."""

    def __init__(
        self,
        client: storage.Client,
        bucket: str,
        prefix: str,
        *,
        max_attempts: int = DEFAULT_MAX_ATTEMPTS,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if max_attempts < 1:
            raise ValueError(f"max_attempts {max_attempts} allows no write at all; use 1 or more")
        self._bucket = client.bucket(bucket)
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.max_attempts = max_attempts
        self._sleep = sleep
        self.conflicts = 0
        """Writes that met another writer's (a 412) and were applied again to the fresh state, since creation: how
        contended the ledger object is (benchmarks/ledger_senders.py reports it per admission)."""

    def __repr__(self) -> str:
        return f"GcsLedgerStore(gs://{self.bucket}/{self.prefix})"

    def object_name(self, organization: str) -> str:
        name = f"ledger/{require_organization_key(organization)}.json"
        return f"{self.prefix}/{name}" if self.prefix else name

    def update(self, organization: str, change: Callable[[LedgerState], tuple[LedgerState, T]]) -> T:
        name = self.object_name(organization)
        token = uuid.uuid4().hex
        tried: list[T] = []  # the result of the last write tried, which may have landed unseen
        for attempt in range(self.max_attempts):
            state, generation = self._read(name)
            if tried and token in state.writes:
                return tried[-1]  # that write landed; only its answer was lost
            new_state, result = change(state)
            if new_state == state:
                return result
            tried = [result]
            try:
                self._bucket.blob(name).upload_from_string(
                    new_state.written_by(token).to_json(),
                    content_type="application/json",
                    if_generation_match=generation,
                )
            except PreconditionFailed:
                self.conflicts += 1
                # Someone else wrote since our read (or our own write landed, see above): back off a little
                # (jittered, so racers spread out) and redo.
                self._sleep(random.uniform(0, min(_BACKOFF_CAP_SECONDS, _BACKOFF_BASE_SECONDS * 2**attempt)))
                continue
            except NotFound:
                raise FileNotFoundError(
                    f"bucket gs://{self.bucket} does not exist; create it or point HATCH_GCS_BUCKET at an existing one"
                ) from None
            return result
        raise LedgerContended(
            f"gave up updating the rate ledger gs://{self.bucket}/{name} after {self.max_attempts} attempts because "
            "other writers changed it every time; run again, and check that no process is reserving slots in a loop"
        )

    def read(self, organization: str) -> LedgerState:
        return self._read(self.object_name(organization))[0]

    def _read(self, name: str) -> tuple[LedgerState, int]:
        """The state and the generation it was read at (0 when the object does not exist yet)."""
        blob: Any = self._bucket.blob(name)
        try:
            data = blob.download_as_bytes()
        except NotFound:
            return LedgerState(), 0
        # download_as_bytes takes the generation from the same response, so state and generation always match.
        return LedgerState.from_json(data, f"gs://{self.bucket}/{name}"), int(blob.generation)
