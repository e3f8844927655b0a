# The user-code image of a deployment: serves the code location over gRPC (Kubernetes user deployment, Dagster+
# hybrid agent). Build from the repository root: docker build -t hatch-pipeline:$(git rev-parse --short HEAD) .
# The same install (`uv sync --frozen --no-dev --group deploy`) is what the production-topology test runs.

# Stage 1: resolve nothing, install exactly uv.lock into /app/.venv (no dev group: no emulators, no test tools).
FROM python:3.11-slim-bookworm AS build
COPY --from=ghcr.io/astral-sh/uv:0.13.9 /uv /usr/local/bin/uv
ENV UV_COMPILE_BYTECODE=1 UV_LINK_MODE=copy UV_PYTHON_DOWNLOADS=never
WORKDIR /app
# Dependencies first, so a change of the code alone reuses this layer.
COPY pyproject.toml uv.lock README.md ./
RUN uv sync --frozen --no-dev --group deploy --no-install-project
COPY hatch_pipeline ./hatch_pipeline
RUN uv sync --frozen --no-dev --group deploy

# Stage 2: the runtime, without uv or build caches, as a user without privileges.
FROM python:3.11-slim-bookworm
RUN useradd --create-home --uid 10001 hatch
COPY --from=build --chown=hatch:hatch /app /app
ENV PATH=/app/.venv/bin:$PATH PYTHONUNBUFFERED=1
WORKDIR /app
USER hatch
EXPOSE 4000
CMD ["dagster", "api", "grpc", "-m", "hatch_pipeline.definitions", "-h", "0.0.0.0", "-p", "4000"]
