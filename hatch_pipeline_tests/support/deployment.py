"""What a deployment is made of, read from the artifacts a user copies: the Dockerfile's install command and the
production instance file. Tests build and run these, so the artifacts are what is tested, not a copy of them."""

from __future__ import annotations

import re
import shlex
from typing import Final

from hatch_pipeline.local.demo import PROJECT_ROOT

DEPLOY_INSTANCE: Final = PROJECT_ROOT / "deploy" / "dagster.yaml"
DOCKERFILE: Final = PROJECT_ROOT / "Dockerfile"


def dockerfile_install_command() -> list[str]:
    """The Dockerfile's last `uv sync` (the one that installs the project itself), as arguments."""
    *_, install = re.findall(r"^RUN (uv sync .*)$", DOCKERFILE.read_text(), flags=re.MULTILINE)
    return shlex.split(install)
