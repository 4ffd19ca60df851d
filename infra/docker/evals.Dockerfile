# syntax=docker/dockerfile:1.7
# The step image: what every PodStep runs (python -m evals.stage | run | benchmark | gate_check |
# canary | handoff). No Airflow inside (evals never imports it). Default of TOLLGATE_IMAGE.
#   docker build -f infra/docker/evals.Dockerfile -t ghcr.io/tollgate-llmops/tollgate-evals:0.1.0 .
# Base pinned by version: python:3.11.14-slim-bookworm (bump here; production may pin @sha256 digests).

# Stage 1: a virtual environment with the locked set and this project.
FROM python:3.11.14-slim-bookworm AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
RUN python -m venv /opt/venv
COPY requirements.txt ./
# The pods need no Airflow: drop it and its providers from the locked set.
RUN grep -v -E '^apache-airflow' requirements.txt > /tmp/req.txt \
    && /opt/venv/bin/pip install -r /tmp/req.txt
COPY pyproject.toml README.md ./
COPY evals ./evals
COPY plugins ./plugins
COPY canary ./canary
COPY gateway ./gateway
RUN /opt/venv/bin/pip install --no-deps .

# Stage 2: the runtime, non-root uid 1000 (tollgate.constants.RUN_AS_USER), read-only root friendly.
FROM python:3.11.14-slim-bookworm
RUN groupadd --gid 1000 tollgate && useradd --uid 1000 --gid 1000 --no-create-home --shell /usr/sbin/nologin tollgate
COPY --from=build /opt/venv /opt/venv
COPY thresholds /app/thresholds
WORKDIR /app
ENV PATH=/opt/venv/bin:$PATH PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1 HOME=/tmp
USER 1000:1000
HEALTHCHECK NONE
ENTRYPOINT []
CMD ["python", "-m", "evals.run", "--help"]
