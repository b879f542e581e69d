# syntax=docker/dockerfile:1
#
# doc_migration image: the `doc-migrate` CLI, the Dagster code location
# (`doc_migration.definitions`) and the Dagster run/step workers all run from this one image.
#
#   docker build -t registry.example.com/doc-migration:0.1.0 .
#   docker run --rm registry.example.com/doc-migration:0.1.0                # doc-migrate --help
#   docker run --rm -e DATABASE_URL=... IMAGE doc-migrate plan
#
# There is deliberately NO ENTRYPOINT. Dagster's K8sRunLauncher, k8s_job_executor and the Helm
# chart's user-code Deployment set only the container `args` (["dagster", "api", "execute_run",
# ...], ["dagster", "api", "grpc", ...]) and never `command`; an ENTRYPOINT such as
# ["doc-migrate"] would turn those into `doc-migrate dagster api ...` and every Dagster pod would
# fail. Our own Kubernetes Jobs set `command: ["doc-migrate"]` explicitly.
#
# Pin the base image by digest in production (`docker buildx imagetools inspect IMAGE` prints
# it) and pass it with --build-arg PYTHON_IMAGE=python:3.11.13-slim-bookworm@sha256:...
ARG PYTHON_IMAGE=python:3.11.13-slim-bookworm

############################################################################################
# builder: compilers allowed here, never in the runtime stage
############################################################################################
FROM ${PYTHON_IMAGE} AS builder

ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PYTHONDONTWRITEBYTECODE=1

# Every dependency ships manylinux wheels for x86_64 and aarch64 today; the toolchain is only a
# fallback for a dependency that publishes an sdist for the target platform.
RUN apt-get update \
 && apt-get install -y --no-install-recommends build-essential \
 && rm -rf /var/lib/apt/lists/*

WORKDIR /src

# 1. Dependencies first, from pyproject's [project.dependencies], so that a code-only change
#    reuses this (slow) layer.
COPY pyproject.toml ./
RUN python -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))" \
        > /tmp/requirements.txt \
 && pip wheel --wheel-dir /wheels -r /tmp/requirements.txt

# 2. The project itself (README.md is optional for the build; the glob keeps COPY from failing).
COPY README.md* ./
COPY doc_migration ./doc_migration
RUN pip wheel --no-deps --wheel-dir /wheels . \
 && python -m venv /opt/venv \
 && /opt/venv/bin/pip install --no-index --find-links /wheels doc-migration \
 && /opt/venv/bin/pip check \
 && /opt/venv/bin/doc-migrate --help > /dev/null

############################################################################################
# runtime: slim, no compilers, non-root, read-only root filesystem friendly
############################################################################################
FROM ${PYTHON_IMAGE} AS runtime

ARG APP_UID=10001
ARG APP_GID=10001

LABEL org.opencontainers.image.title="doc-migration" \
      org.opencontainers.image.description="Dagster pipeline that migrates technical documentation into PostgreSQL + pgvector" \
      org.opencontainers.image.base.name="${PYTHON_IMAGE}"

# The only writable paths at run time. Kubernetes mounts emptyDir volumes over exactly these
# (the root filesystem is read-only there); under plain `docker run` they are ordinary
# directories owned by the app user.
#   /var/lib/doc-migration     DOC_MIGRATION_HOME (run state, caches, reports)
#   /opt/dagster/dagster_home  DAGSTER_HOME (the Helm chart's default path; dagster.yaml is
#                              mounted into it from a ConfigMap by the Dagster deployment)
#   /tmp                       scratch (also HOME, so libraries that write ~/.cache work)
RUN groupadd --system --gid "${APP_GID}" docmig \
 && useradd --system --uid "${APP_UID}" --gid "${APP_GID}" --no-create-home \
        --home-dir /nonexistent --shell /usr/sbin/nologin docmig \
 && mkdir -p /var/lib/doc-migration /opt/dagster/dagster_home \
 && chown "${APP_UID}:${APP_GID}" /var/lib/doc-migration /opt/dagster/dagster_home \
 && chmod 0750 /var/lib/doc-migration /opt/dagster/dagster_home

# Same base image as the builder, so the venv's interpreter symlinks stay valid. The .pyc files
# compiled at install time ship in the image; nothing is compiled at run time.
COPY --from=builder /opt/venv /opt/venv

ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PYTHONFAULTHANDLER=1 \
    HOME=/tmp \
    DOC_MIGRATION_HOME=/var/lib/doc-migration \
    DAGSTER_HOME=/opt/dagster/dagster_home

USER ${APP_UID}:${APP_GID}
WORKDIR /var/lib/doc-migration

# Dagster code server port (`dagster api grpc -m doc_migration.definitions -h 0.0.0.0 -p 4000`).
EXPOSE 4000

# doc-migrate runs as PID 1 and handles SIGTERM/SIGINT itself (exit code 130).
CMD ["doc-migrate", "--help"]
