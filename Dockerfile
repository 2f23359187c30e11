# syntax=docker/dockerfile:1
# The in-cluster agent image: kubectl-etcdbackup plus etcd's etcdctl/etcdutl on python:3.12-slim.
#   docker build -t ghcr.io/kubectl-etcdbackup/agent:0.1.0 .
# The CronJob and the exporter run it with an explicit command (exec form); no shell is used at run time.

# etcd's official image is only a source of the etcdctl/etcdutl binaries (it never runs, nor in the cluster).
# Alternative: --build-arg ETCD_IMAGE=gcr.io/etcd-development/etcd:v3.5.21
ARG ETCD_IMAGE=registry.k8s.io/etcd:3.5.21-0

FROM ${ETCD_IMAGE} AS etcd

# Build the wheel and install it, with its dependencies, into a self-contained virtualenv.
FROM python:3.12-slim AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY pyproject.toml README.md LICENSE ./
COPY kubectl_etcdbackup ./kubectl_etcdbackup
RUN python -m pip wheel --no-deps --wheel-dir /wheels . \
    && python -m venv /opt/etcdbackup \
    && /opt/etcdbackup/bin/pip install /wheels/*.whl \
    && /opt/etcdbackup/bin/kubectl-etcdbackup version

# Runtime: no build tools, no sources; non-root by default (the backup pod overrides this with uid 0 only
# to read kubeadm's root-only etcd client key).
FROM python:3.12-slim
LABEL org.opencontainers.image.title="kubectl-etcdbackup agent" \
      org.opencontainers.image.source="https://github.com/kubectl-etcdbackup/kubectl-etcdbackup" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=etcd /usr/local/bin/etcdctl /usr/local/bin/etcdutl /usr/local/bin/
COPY --from=build /opt/etcdbackup /opt/etcdbackup
ENV PATH=/opt/etcdbackup/bin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
USER 65532:65532
ENTRYPOINT ["kubectl-etcdbackup"]
CMD ["--help"]
