# syntax=docker/dockerfile:1
# consentry's images: one multi-stage build with one final target per service.
#
#   docker build --target consent -t consentry-consent:0.1.0 .
#   (targets: consent, preferences, subprocessors, audit)
#
# An image runs `python -m consentry.<service> <process>`: the process is the command, e.g.
# `docker run consentry-consent:0.1.0 api` (see deploy/README.md). Everything is installed from
# uv.lock; the protobuf code is generated here (proto/gen is never copied in). The final stages
# hold the Python runtime and one virtual environment: no uv, pip, compiler or source tree.
# `make lint` runs hadolint on this file.

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# ---- build: uv, the protobuf generator, the generated code ---------------------------------
FROM ${PYTHON_IMAGE} AS build
ARG UV_VERSION=0.13.9
RUN pip install --no-cache-dir "uv==${UV_VERSION}"
ENV UV_FROZEN=1 \
    UV_COMPILE_BYTECODE=1 \
    UV_LINK_MODE=copy \
    UV_PYTHON_DOWNLOADS=never \
    UV_PYTHON_PREFERENCE=only-system \
    UV_PYTHON=/usr/local/bin/python3
WORKDIR /src
COPY . .
# Only the `proto` dependency group (grpcio-tools, mypy-protobuf) goes into /src/.venv.
RUN --mount=type=cache,target=/root/.cache/uv \
    uv sync --only-group proto \
 && uv run --no-sync python proto/generate.py

# ---- one virtual environment per service: its package and its dependencies, as wheels ----
FROM build AS venv-consent
RUN --mount=type=cache,target=/root/.cache/uv \
    UV_PROJECT_ENVIRONMENT=/opt/consentry \
    uv sync --no-dev --no-editable --package consentry-consent

FROM build AS venv-preferences
RUN --mount=type=cache,target=/root/.cache/uv \
    UV_PROJECT_ENVIRONMENT=/opt/consentry \
    uv sync --no-dev --no-editable --package consentry-preferences

FROM build AS venv-subprocessors
RUN --mount=type=cache,target=/root/.cache/uv \
    UV_PROJECT_ENVIRONMENT=/opt/consentry \
    uv sync --no-dev --no-editable --package consentry-subprocessors

FROM build AS venv-audit
RUN --mount=type=cache,target=/root/.cache/uv \
    UV_PROJECT_ENVIRONMENT=/opt/consentry \
    uv sync --no-dev --no-editable --package consentry-audit

# ---- runtime: the interpreter, a non-root user, nothing that installs or compiles ---------
FROM ${PYTHON_IMAGE} AS runtime
RUN python -m pip uninstall --yes --quiet pip setuptools wheel \
 && groupadd --system --gid 10001 consentry \
 && useradd --system --uid 10001 --gid consentry --no-create-home \
      --home-dir /nonexistent --shell /usr/sbin/nologin consentry
# The APIs listen on 0.0.0.0:8000 in a container (the settings' default is 127.0.0.1). The
# root filesystem may be read-only: nothing writes byte code; faust's scratch files go to /tmp.
ENV PATH=/opt/consentry/bin:${PATH} \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    CONSENTRY_HTTP_HOST=0.0.0.0 \
    CONSENTRY_HTTP_PORT=8000
WORKDIR /tmp
USER 10001:10001
EXPOSE 8000

FROM runtime AS consent
COPY --from=venv-consent /opt/consentry /opt/consentry
LABEL org.opencontainers.image.title="consentry-consent"
ENTRYPOINT ["python", "-m", "consentry.consent"]
CMD ["--help"]

FROM runtime AS preferences
COPY --from=venv-preferences /opt/consentry /opt/consentry
LABEL org.opencontainers.image.title="consentry-preferences"
ENTRYPOINT ["python", "-m", "consentry.preferences"]
CMD ["--help"]

FROM runtime AS subprocessors
COPY --from=venv-subprocessors /opt/consentry /opt/consentry
LABEL org.opencontainers.image.title="consentry-subprocessors"
ENTRYPOINT ["python", "-m", "consentry.subprocessors"]
CMD ["--help"]

FROM runtime AS audit
COPY --from=venv-audit /opt/consentry /opt/consentry
LABEL org.opencontainers.image.title="consentry-audit"
ENTRYPOINT ["python", "-m", "consentry.audit"]
CMD ["--help"]
