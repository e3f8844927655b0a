"""The message a failed run sends to the operators' chat, and sending it.

A webhook URL (HATCH_ALERT_WEBHOOK: Slack's incoming webhooks, Microsoft Teams' and Google Chat's take the same JSON
`{"text": ...}`) receives one message per failed run, saying which days of which sources failed and why, and what to
do. The API key never travels: it is cut out of every text before the message is built.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Final

import httpx

REDACTED: Final = "[HATCH_API_KEY]"
_TIMEOUT_SECONDS: Final = 10.0
_MAX_CAUSE_CHARS: Final = 1500


@dataclass(frozen=True)
class FailedRun:
    """What the alert tells: the run, the sources (asset keys) it was building, its days and why it failed."""

    run_id: str
    job: str
    assets: Sequence[str]
    days: str | None
    """"2026-11-01..2026-11-14", one day, or None for a run without partitions."""
    causes: Sequence[str]


def redact(text: str, secrets: Iterable[str]) -> str:
    for secret in secrets:
        if secret:
            text = text.replace(secret, REDACTED)
    return text


def alert_text(failed: FailedRun, secrets: Iterable[str] = ()) -> str:
    """The message's text: one line naming the run's days and sources, then each cause, then where to look."""
    secrets = list(secrets)
    what = ", ".join(failed.assets) or failed.job
    days = f" for {failed.days}" if failed.days else ""
    lines = [f"hatch_pipeline: run {failed.run_id[:8]} ({failed.job}) failed{days}: {what}"]
    for cause in failed.causes or ["the run failed without a step failure (its worker died?); see the run's log"]:
        lines.append(f"- {cause[:_MAX_CAUSE_CHARS]}")
    lines.append(f"Open the run {failed.run_id} in the Dagster UI for its log.")
    return redact("\n".join(lines), secrets)


def post_alert(url: str, text: str) -> None:
    """POST `{"text": text}` to the webhook; an answer other than 2xx raises with the status (not the URL, which
    holds the webhook's own secret)."""
    response = httpx.post(url, json={"text": text}, timeout=_TIMEOUT_SECONDS)
    if not response.is_success:
        raise AlertNotSent(f"the alert webhook answered {response.status_code}; check HATCH_ALERT_WEBHOOK")


class AlertNotSent(RuntimeError):
    """The webhook refused the message."""
