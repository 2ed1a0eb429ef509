# syntax=docker/dockerfile:1
#
# ONE image for every Python component of the mesh: the schema registry, its `register-all` job
# and every service under services/. docker-compose.yml picks the process with `command:`, so
# nothing here is specific to one component (no CMD, no ENTRYPOINT).
#
#   docker build -t meshkit:local .

# Both stages must share one interpreter: the venv built in the first is copied into the second
# and its python is a symlink to /usr/local/bin/python3.11.
ARG PYTHON_IMAGE=python:3.11-slim

# ---------------------------------------------------------------------------------------------
# builder: resolve nothing, install exactly what uv.lock pins, into /app/.venv
# ---------------------------------------------------------------------------------------------
FROM ${PYTHON_IMAGE} AS builder

# Same uv as `make setup` (Makefile UV_VERSION), so the image and .venv read uv.lock alike.
RUN pip install --no-cache-dir --disable-pip-version-check uv==0.13.9

# The image's own python only: a uv-managed download would live outside the runtime stage.
# Bytecode is compiled here because the runtime user cannot write into the venv.
# Copy mode: the uv cache is a separate mount, so hardlinks into the venv are not possible.
ENV UV_PYTHON_DOWNLOADS=never \
    UV_PYTHON_PREFERENCE=only-system \
    UV_PROJECT_ENVIRONMENT=/app/.venv \
    UV_COMPILE_BYTECODE=1 \
    UV_LINK_MODE=copy

WORKDIR /app

# The workspace: its lock and every member of [tool.uv.workspace] members (services/* as a
# whole, so a new service is in the image without touching this file).
COPY pyproject.toml uv.lock ./
COPY libs/ libs/
COPY gen/ gen/
COPY schema-registry/ schema-registry/
COPY services/ services/

# --locked: fail instead of re-resolving when uv.lock is stale.
# --no-dev: pytest, ruff, mypy and the code generators stay out of the image.
# --no-editable: members are installed as wheels, so the runtime stage needs no source tree.
# --all-packages: every workspace member, even one not yet listed in the root dependencies.
# --no-install-package mesh-runner: the developer runner (`mesh`) is no part of a deployed service.
RUN --mount=type=cache,target=/root/.cache/uv \
    uv sync --locked --no-dev --no-editable --all-packages --no-install-package mesh-runner

# ---------------------------------------------------------------------------------------------
# runtime: the venv, the contracts (`register-all proto/` reads them), a non-root user
# ---------------------------------------------------------------------------------------------
FROM ${PYTHON_IMAGE} AS runtime

ENV PATH=/app/.venv/bin:$PATH \
    VIRTUAL_ENV=/app/.venv \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1

# A fixed uid so volume ownership is stable across rebuilds. /data is created here, owned by
# that user, because Docker seeds an empty named volume from the image's directory: mounted
# over /data, the volume is then writable by the service.
RUN groupadd --system --gid 10001 mesh \
    && useradd --system --uid 10001 --gid mesh --create-home --home-dir /home/mesh \
        --shell /usr/sbin/nologin mesh \
    && install -d -o mesh -g mesh -m 0750 /data

WORKDIR /app
COPY --from=builder /app/.venv /app/.venv
COPY proto/ proto/

USER 10001:10001
