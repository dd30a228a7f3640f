# syntax=docker/dockerfile:1
# livefeat's container image: `make image` builds it (docs/operations.md).
#
# Two stages on the same Python. The build stage runs exactly what `make install`
# runs, without -e and the dev extras: `pip install .` builds the wheel (the hatch
# hook in hatch_build.py generates service/_gen/ from protos/ and compiles
# service/_native.c) and installs it with its dependencies into a venv. Every
# dependency ships manylinux wheels; only our own C module needs a compiler, in the
# build stage. The runtime stage gets the venv and nothing else.
# Production pins the base by digest: --build-arg PYTHON_IMAGE=python:3.11-slim-bookworm@sha256:...
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore \
    PYTHONDONTWRITEBYTECODE=1
# gcc and the C library headers for service/_native.c (Python's own headers are in the image).
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends gcc libc6-dev \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
# What `pip install .` reads; .dockerignore keeps everything else (and any
# service/_gen/ left in a work tree) out of the context.
COPY pyproject.toml README.md hatch_build.py ./
COPY protos/ protos/
COPY service/ service/
# The venv gets no pip of its own: the base image's pip installs into it (--python).
# The last command fails the build if the generated gRPC code or the compiled module
# cannot be imported.
RUN python -m venv --without-pip /opt/livefeat \
 && pip --python /opt/livefeat/bin/python install --no-cache-dir --compile . \
 && /opt/livefeat/bin/python -c "import service.server, service._native, service._gen.livefeat.v1.livefeat_pb2_grpc"

FROM ${PYTHON_IMAGE} AS runtime
ARG PYTHON_IMAGE
ARG VERSION=0.1.0
ARG REVISION=unknown
ARG CREATED=unknown
LABEL org.opencontainers.image.title="livefeat" \
      org.opencontainers.image.description="Online feature serving for live-streaming recommendation (HTTP :8080, gRPC :50051)" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.created="${CREATED}" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.documentation="docs/operations.md" \
      org.opencontainers.image.base.name="${PYTHON_IMAGE}"
# The venv's python first; no .pyc writes (the root filesystem is read-only in
# Kubernetes; pip compiled the package at install); RocksDB under /var/lib/livefeat.
ENV PATH=/opt/livefeat/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    LIVEFEAT_DATA_DIR=/var/lib/livefeat \
    LIVEFEAT_HTTP_PORT=8080 \
    LIVEFEAT_GRPC_PORT=50051
RUN groupadd --system --gid 10001 livefeat \
 && useradd --system --uid 10001 --gid livefeat --no-create-home --home-dir /nonexistent \
            --shell /usr/sbin/nologin livefeat \
 && install -d -o livefeat -g livefeat -m 0750 /var/lib/livefeat
COPY --from=build /opt/livefeat /opt/livefeat
USER 10001:10001
WORKDIR /var/lib/livefeat
EXPOSE 8080 50051
# No curl in the image: the venv's python asks /healthz (urlopen raises on a non-2xx).
HEALTHCHECK --interval=10s --timeout=3s --start-period=60s --retries=3 \
  CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('LIVEFEAT_HTTP_PORT', '8080'), timeout=2)"]
# `livefeat serve` handles SIGTERM itself (readiness false, drain, stop): it runs as
# PID 1 with no shell in between, and starts no child processes to reap.
STOPSIGNAL SIGTERM
ENTRYPOINT ["livefeat"]
CMD ["serve"]
