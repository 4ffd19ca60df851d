# syntax=docker/dockerfile:1.7
# The inference gateway (python -m gateway): routing stable/canary, request log, /metrics.
#   docker build -f infra/docker/gateway.Dockerfile -t ghcr.io/tollgate-llmops/tollgate-gateway:0.1.0 .
# Base pinned by version: python:3.11.14-slim-bookworm (bump here; production may pin @sha256 digests).

FROM python:3.11.14-slim-bookworm AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
RUN python -m venv /opt/venv
COPY requirements.txt ./
RUN grep -v -E '^apache-airflow' requirements.txt > /tmp/req.txt \
    && /opt/venv/bin/pip install -r /tmp/req.txt
COPY pyproject.toml README.md ./
COPY evals ./evals
COPY plugins ./plugins
COPY canary ./canary
COPY gateway ./gateway
RUN /opt/venv/bin/pip install --no-deps .

FROM python:3.11.14-slim-bookworm
RUN groupadd --gid 1000 tollgate && useradd --uid 1000 --gid 1000 --no-create-home --shell /usr/sbin/nologin tollgate
COPY --from=build /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1 HOME=/tmp
USER 1000:1000
EXPOSE 8000 9000
HEALTHCHECK --interval=10s --timeout=3s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=2)"]
ENTRYPOINT ["python", "-m", "gateway"]
CMD ["--config", "/etc/tollgate/gateway.yaml", "--host", "0.0.0.0", "--port", "8000", "--admin-port", "9000"]
