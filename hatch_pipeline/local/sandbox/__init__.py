"""A local stand-in for the Hatch Bulk Export API: deterministic synthetic data behind the published contract."""

from hatch_pipeline.local.sandbox.data import DEFAULT_API_KEY, DEFAULT_ORGANIZATION_ID, SandboxConfig, rows_for_day
from hatch_pipeline.local.sandbox.server import AccessRecord, Fault, SandboxServer, serve

__all__ = [
    "DEFAULT_API_KEY",
    "DEFAULT_ORGANIZATION_ID",
    "AccessRecord",
    "Fault",
    "SandboxConfig",
    "SandboxServer",
    "rows_for_day",
    "serve",
]
