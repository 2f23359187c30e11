# syntax=docker/dockerfile:1
# The in-cluster agent image: kubectl-etcdbackup[agent] plus etcd's etcdctl/etcdutl/etcd on distroless Python
# (Debian 12's CPython 3.11; no shell, no package manager).
#   docker build -t ghcr.io/kubectl-etcdbackup/agent:0.1.0 .
# The CronJob and the exporter run it with an explicit command (exec form); no shell is used at run time.
# Base images are pinned by digest: scripts/bump-image-digests.py rewrites the digests below.

# etcd's official image is only a source of the etcdctl/etcdutl/etcd binaries (it never runs, nor in the cluster):
# 3.5.21, the etcd of kubeadm 1.33. Alternative: gcr.io/etcd-development/etcd:v3.5.21
ARG ETCD_IMAGE=registry.k8s.io/etcd:3.5.21-0@sha256:0000000000000000000000000000000000000000000000000000000000000000
# The build stage has Debian 12's python3, the very interpreter of the runtime image, so the venv it makes
# (bin/python -> /usr/bin/python3) works there unchanged.
ARG BUILD_IMAGE=debian:12-slim@sha256:0000000000000000000000000000000000000000000000000000000000000000
ARG RUNTIME_IMAGE=gcr.io/distroless/python3-debian12:nonroot@sha256:0000000000000000000000000000000000000000000000000000000000000000

FROM ${ETCD_IMAGE} AS etcd

# Dependencies from requirements/agent.lock (every wheel hash-checked, nothing built from source) into a
# venv without pip; the package wheel is built from the sources with the locked build backend.
FROM ${BUILD_IMAGE} AS build
RUN apt-get update -qq \
    && apt-get install -y -qq --no-install-recommends python3 python3-venv \
    && rm -rf /var/lib/apt/lists/*
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY requirements/agent.lock requirements/build.lock ./requirements/
RUN python3 -m venv /opt/build \
    && python3 -m venv --without-pip /opt/etcdbackup \
    && /opt/build/bin/pip install --only-binary :all: --require-hashes -r requirements/build.lock \
    && /opt/build/bin/pip --python /opt/etcdbackup/bin/python install --only-binary :all: --require-hashes \
       -r requirements/agent.lock
COPY pyproject.toml README.md LICENSE ./
COPY kubectl_etcdbackup ./kubectl_etcdbackup
RUN /opt/build/bin/pip wheel --no-deps --no-build-isolation --wheel-dir /wheels . \
    && /opt/build/bin/pip --python /opt/etcdbackup/bin/python install --no-index --no-deps /wheels/*.whl \
    && /opt/build/bin/pip --python /opt/etcdbackup/bin/python check \
    && /opt/etcdbackup/bin/kubectl-etcdbackup version

# Runtime: no shell, no package manager, no build tools, no sources; non-root by default (the backup pod
# overrides this with uid 0 only to read kubeadm's root-only etcd client key).
FROM ${RUNTIME_IMAGE}
LABEL org.opencontainers.image.title="kubectl-etcdbackup agent" \
      org.opencontainers.image.source="https://github.com/kubectl-etcdbackup/kubectl-etcdbackup" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=etcd /usr/local/bin/etcdctl /usr/local/bin/etcdutl /usr/local/bin/etcd /usr/local/bin/
COPY --from=build /opt/etcdbackup /opt/etcdbackup
ENV PATH=/opt/etcdbackup/bin:/usr/local/bin:/usr/bin:/bin \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
USER 65532:65532
ENTRYPOINT ["kubectl-etcdbackup"]
CMD ["--help"]
