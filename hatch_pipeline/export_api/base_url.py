"""Which base URLs the API key may travel to: it rides in a header, so plain http only ever reaches loopback."""

from __future__ import annotations

from typing import Final
from urllib.parse import urlsplit

LOOPBACK_HOSTS: Final = frozenset({"localhost", "127.0.0.1", "::1"})


class InvalidBaseUrl(ValueError):
    """The base URL is not http(s), or is plain http to a host other than loopback; the message says how to fix
    it (HATCH_API_BASE_URL is where the URL comes from)."""


def validate_base_url(url: str) -> None:
    """The key travels in a header: refuse plain http anywhere but loopback."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise InvalidBaseUrl(f"HATCH_API_BASE_URL={url!r} is not an http(s) URL")
    if parts.scheme == "http" and parts.hostname not in LOOPBACK_HOSTS:
        raise InvalidBaseUrl(
            f"HATCH_API_BASE_URL must use https unless the host is loopback (got host {parts.hostname!r}); "
            "the API key would otherwise travel in clear text"
        )


def is_loopback(url: str) -> bool:
    """Whether `url` reaches this machine only: such a URL never needs a proxy."""
    return urlsplit(url).hostname in LOOPBACK_HOSTS
