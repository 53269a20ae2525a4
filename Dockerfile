# meshca server image: `docker build -t meshca:0.1.0 .`
# Two stages: the builder has pip and the build backend; the final image only the installed venv.
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS builder
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
# Only what the wheel is built from (pyproject's readme is part of the metadata).
COPY pyproject.toml README.md ./
COPY meshca ./meshca
RUN python -m pip wheel --no-deps --wheel-dir /wheels . \
 && python -m venv /opt/meshca \
 && /opt/meshca/bin/pip install /wheels/meshca-*.whl \
 && /opt/meshca/bin/pip uninstall --yes pip

FROM ${PYTHON_IMAGE}
# A fixed numeric UID/GID, so Kubernetes can check runAsNonRoot without resolving names.
# /var/lib/meshca holds the data dir (data/) and, beside it, the key-encryption key (data.kek),
# which meshca keeps outside the data dir; mount a volume here to keep them.
RUN groupadd --system --gid 10001 meshca \
 && useradd --system --uid 10001 --gid 10001 --no-create-home \
      --home-dir /var/lib/meshca --shell /usr/sbin/nologin meshca \
 && install -d -o 10001 -g 10001 -m 0700 /var/lib/meshca
COPY --from=builder /opt/meshca /opt/meshca
ENV PATH=/opt/meshca/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    MESHCA_DATA_DIR=/var/lib/meshca/data \
    MESHCA_GRPC_ADDR=0.0.0.0:15012 \
    MESHCA_ADMIN_ADDR=0.0.0.0:8443 \
    MESHCA_METRICS_ADDR=0.0.0.0:15014
USER 10001:10001
WORKDIR /var/lib/meshca
# gRPC (Istio CA API), admin HTTPS, metrics, ext_authz, the SPIFFE bundle endpoint (the chart's ports).
EXPOSE 15012 8443 15014 9191 8444
ENTRYPOINT ["meshca", "serve"]
