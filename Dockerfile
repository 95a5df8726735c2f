# syntax=docker/dockerfile:1
#
# fleet's image: `fleet serve` by default, and every other `fleet` command.
#
#   docker build -t fleet .
#   docker run --rm -p 8080:8080 -e FLEET_REPO=https://git.example.com/acme/fleet.git fleet
#
# The builder stage makes a wheel of fleet and of every dependency (libvirt-python compiles
# against libvirt-dev there); the runtime stage installs those wheels beside the runtime
# libraries alone. tests/test_ship.py checks this file: hadolint, what it copies, and that its
# Debian packages are the runtime side of scripts/bootstrap.sh's.

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS builder

# gcc, libc6-dev, pkg-config and libvirt-dev: libvirt-python has no binary wheel and compiles here.
# Versions are not pinned: the tag of the base image pins the Debian release, whose security
# updates should land in every build.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends gcc libc6-dev libvirt-dev pkg-config \
    && rm -rf /var/lib/apt/lists/*

WORKDIR /src
COPY pyproject.toml README.md ./
COPY reconciler/ reconciler/
COPY providers/ providers/
COPY lab/ lab/
# Every dependency's wheel (the versions pip resolves from pyproject.toml's ranges), and fleet's.
RUN pip wheel --no-cache-dir --wheel-dir /wheels .


FROM ${PYTHON_IMAGE}

ARG VERSION=0.1.0
ARG REVISION=unknown
ARG CREATED=unknown
LABEL org.opencontainers.image.title="fleet" \
      org.opencontainers.image.description="GitOps reconciler for physical infrastructure: bare metal, VMs, Kubernetes clusters and Spark pools" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.created="${CREATED}" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.source="https://github.com/example/fleet" \
      org.opencontainers.image.url="https://github.com/example/fleet" \
      org.opencontainers.image.base.name="docker.io/library/python:3.11-slim-bookworm"

# libvirt0: the client library libvirt-python loads (libvirt-dev's runtime side).
# openssh-client: Ansible's SSH connections, and libvirt's qemu+ssh:// URIs.
# ca-certificates: HTTPS to forges, fleet repos and Kubernetes API servers.
# Not git: pygit2's wheel carries libgit2, libssh2 and OpenSSL, and fleet never runs `git`.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates libvirt0 openssh-client \
    && rm -rf /var/lib/apt/lists/*

# A fixed UID, so that Kubernetes' runAsNonRoot can check it (deploy/base runs as 10001).
RUN groupadd --system --gid 10001 fleet \
    && useradd --system --uid 10001 --gid fleet --home-dir /home/fleet --create-home \
       --shell /usr/sbin/nologin fleet \
    && install -d -o fleet -g fleet /var/lib/fleet /var/cache/fleet

# The builder's wheels are mounted, not copied: no layer keeps them.
RUN --mount=type=bind,from=builder,source=/wheels,target=/wheels \
    python -m venv /opt/fleet \
    && /opt/fleet/bin/pip install --no-cache-dir --no-index --find-links /wheels "fleet==${VERSION}"

ENV PATH=/opt/fleet/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    FLEET_LISTEN=0.0.0.0:8080 \
    FLEET_STATE_DIR=/var/lib/fleet \
    FLEET_CACHE_DIR=/var/cache/fleet

USER 10001:10001
WORKDIR /home/fleet
EXPOSE 8080

# The port is FLEET_LISTEN's; Python is in the image already, so no curl for this.
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; port = os.environ.get('FLEET_LISTEN', ':8080').rpartition(':')[2]; urllib.request.urlopen(f'http://127.0.0.1:{port}/healthz', timeout=4)"]

ENTRYPOINT ["fleet"]
CMD ["serve"]
