# syntax=docker/dockerfile:1
# The energymon images, from one build stage:
#
# - the project image (the default target, `runtime`): one image for the Dagster code server
#   (`dagster-code`, where the runs execute), the webserver (`dagster-webserver`) and the daemon
#   (`dagster-daemon`) of docker-compose.yml, which gives each its command;
# - the virtual Modbus TCP server (target `virtual-server`, `python -m virtual_server`).
#
# Build from the project root (docker compose does this):
#   docker build -t energymon:0.1.0 .
#   docker build --target virtual-server -t energymon-virtual-server:0.1.0 .
#
# Base images are pinned to exact versions: a rebuild gets the same Python and the same uv.

# -- build: the locked virtualenv, project included -------------------------------------------
FROM python:3.11.13-slim-bookworm AS build

# uv from its official image, the version the Makefile bootstraps.
COPY --from=ghcr.io/astral-sh/uv:0.13.9 /uv /uvx /usr/local/bin/

ENV UV_COMPILE_BYTECODE=1 \
    UV_LINK_MODE=copy \
    UV_PYTHON_DOWNLOADS=never \
    UV_PROJECT_ENVIRONMENT=/app/.venv

WORKDIR /app

# Optional extras of pyproject.toml, e.g. `docker` (dagster-docker) for the compose variant in
# which each run gets its own container (docker-compose.runs-in-containers.yml sets it).
ARG ENERGYMON_EXTRAS=""

# Dependencies first, exactly as locked (the build fails if uv.lock is stale): this layer is
# rebuilt only when pyproject.toml or uv.lock change, not on every code change.
COPY pyproject.toml uv.lock ./
RUN --mount=type=cache,target=/root/.cache/uv \
    uv sync --locked --no-dev --no-install-project ${ENERGYMON_EXTRAS:+--extra $ENERGYMON_EXTRAS}

# Then the project itself, installed into the virtualenv as a package (not editable), so the
# images need the virtualenv only. README.md is the package's readme.
COPY README.md ./
COPY energymon_pipeline ./energymon_pipeline
COPY virtual_server ./virtual_server
RUN --mount=type=cache,target=/root/.cache/uv \
    uv sync --locked --no-dev --no-editable ${ENERGYMON_EXTRAS:+--extra $ENERGYMON_EXTRAS}

# -- app: what both images start from: the virtualenv and an unprivileged user ---------------
FROM python:3.11.13-slim-bookworm AS app

# No compilers, no uv, no sources: only the virtualenv (its python links to this same base).
COPY --from=build /app/.venv /app/.venv

# The user the processes run as (each image switches to it last). It owns only what an image
# lets it write; the code is read-only to it.
RUN groupadd --system --gid 10001 energymon \
    && useradd --system --uid 10001 --gid energymon --no-create-home \
       --shell /usr/sbin/nologin energymon

ENV PATH="/app/.venv/bin:$PATH" \
    PYTHONUNBUFFERED=1

# -- virtual-server: the virtual Modbus TCP server --------------------------------------------
FROM app AS virtual-server

USER 10001:10001
WORKDIR /app

# Listen on every interface of the container (publishing to the host is the run/compose
# file's decision) and on the Modbus port 502, as in the compose stack. A non-root process
# may bind 502 because Docker (20.10+) sets net.ipv4.ip_unprivileged_port_start=0 in
# containers; elsewhere set VIRTUAL_SERVER_PORT=5020 and map the port instead.
ENV VIRTUAL_SERVER_LISTEN_HOST=0.0.0.0 \
    VIRTUAL_SERVER_PORT=502
EXPOSE 502

HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import os, socket; socket.create_connection(('127.0.0.1', int(os.environ['VIRTUAL_SERVER_PORT'])), 3).close()"]

# Exec form: the server is PID 1 and gets SIGTERM from `docker stop`, and stops cleanly.
CMD ["python", "-m", "virtual_server"]

# -- runtime: the project image: the instance files, the Dagster services ---------------------
FROM app AS runtime

# The production instance (PostgreSQL storage, queued runs, telemetry off) and workspace (the
# code server `dagster-code`:4000) live in DAGSTER_HOME, the webserver's and daemon's working
# folder. They belong to root: the processes read them and cannot change them.
ENV DAGSTER_HOME=/opt/dagster/home
COPY dagster.yaml workspace.yaml /opt/dagster/home/
# Creates the registry and Dagster databases when missing (run before `energymon db upgrade`).
COPY config/postgres/ensure_databases.py /opt/energymon/ensure_databases.py

# The unprivileged user owns only what it writes: Dagster's local files (compute logs, under
# DAGSTER_HOME/storage) and the spool; both are volumes in docker-compose.yml.
RUN mkdir -p /opt/dagster/home/storage /var/lib/energymon/spool \
    && chown 10001:10001 /opt/dagster/home /opt/dagster/home/storage /var/lib/energymon/spool
USER 10001:10001

ENV ENERGYMON_SPOOL_DIR=/var/lib/energymon/spool
WORKDIR /opt/dagster/home

# 4000: the gRPC code server; 3001: the webserver.
EXPOSE 4000 3001

# The default command is the code server's: create missing databases, migrate the registry
# (idempotent), then serve the definitions. `exec` makes the server PID 1, so `docker stop`
# reaches it. The webserver and the daemon get their own commands from docker-compose.yml.
CMD ["sh", "-c", "python /opt/energymon/ensure_databases.py && energymon db upgrade && exec dagster api grpc -m energymon_pipeline.definitions -h 0.0.0.0 -p 4000"]
