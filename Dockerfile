# difymaint container image: one command per Dify maintenance job, run by Kubernetes CronJobs or
# `docker compose run --rm difymaint <job>`. Build: docker build -t difymaint:0.1.0 .
# Base pinned by version (bump deliberately; pin by digest in your registry's copy if you mirror it).
ARG PYTHON_IMAGE=python:3.12.8-slim-bookworm

# --- build: a wheel of this checkout and every dependency, installed into a virtualenv -----------------------------
FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY pyproject.toml README.md constraints.txt ./
COPY difymaint ./difymaint
# All dependencies ship manylinux wheels (psycopg2-binary included): no compiler is needed, even here.
RUN python -m venv /opt/difymaint \
    && /opt/difymaint/bin/pip install --no-compile -c constraints.txt ".[otel]" \
    && /opt/difymaint/bin/python -m compileall -q /opt/difymaint/lib

# --- runtime: the virtualenv only; no pip cache, no sources, no build tools --------------------------------------
FROM ${PYTHON_IMAGE}
LABEL org.opencontainers.image.title="difymaint" \
      org.opencontainers.image.description="Dify's periodic maintenance jobs as a cron/CronJob-friendly CLI" \
      org.opencontainers.image.licenses="Apache-2.0"
# uid/gid 10001: the runAsUser/runAsGroup of the generated manifests (difymaint.ops.manifests.UID).
RUN groupadd --gid 10001 difymaint \
    && useradd --uid 10001 --gid 10001 --home-dir /tmp --no-create-home --shell /usr/sbin/nologin difymaint
COPY --from=build /opt/difymaint /opt/difymaint
# Read-only root filesystem: byte code is compiled at build time, nothing is written but /tmp (an emptyDir).
ENV PATH=/opt/difymaint/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOME=/tmp
USER 10001:10001
WORKDIR /tmp
# Exec form: difymaint is PID 1 and receives SIGTERM itself (it finishes the open batch, then exits 143).
ENTRYPOINT ["difymaint"]
CMD ["--help"]
