# Leadflow image: runs a Prefect process worker by default; the API runs from the same image
# (override the command). Build: docker build -t leadflow .
FROM python:3.11-slim AS base

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    LEADFLOW_HOME=/data \
    LEADFLOW_SANDBOX=false \
    LEADFLOW_PROJECT_DIR=/app \
    PREFECT_SERVER_ANALYTICS_ENABLED=false \
    DO_NOT_TRACK=1

# Chromium for the JavaScript (scrapy-playwright) crawls; tini reaps crawl subprocesses.
RUN apt-get update \
    && apt-get install -y --no-install-recommends chromium tini \
    && rm -rf /var/lib/apt/lists/*

WORKDIR /app
COPY pyproject.toml README.md ./
COPY leadflow ./leadflow
COPY models ./models
COPY spiders ./spiders
COPY connectors ./connectors
COPY tasks ./tasks
COPY flows ./flows
COPY api ./api
COPY sandbox ./sandbox
COPY scrapy.cfg prefect.yaml ./
RUN pip install .

RUN useradd --create-home --uid 10001 leadflow \
    && mkdir -p /data && chown leadflow:leadflow /data
USER leadflow
VOLUME ["/data"]

ENTRYPOINT ["/usr/bin/tini", "--"]
# PREFECT_API_URL must point at the Prefect server; LEADFLOW_MONGODB_URI at MongoDB.
CMD ["prefect", "worker", "start", "--pool", "leadflow-process", "--type", "process"]
