# syntax=docker/dockerfile:1.7
# The Airflow image: the official apache/airflow base plus Tollgate (dags/, plugins/, evals).
# Used by infra/helm/airflow-values.yaml (images.airflow) and docker-compose.yaml.
#   docker build -f infra/docker/airflow.Dockerfile -t ghcr.io/tollgate-llmops/tollgate-airflow:0.1.0 .
# Base pinned by version: apache/airflow:3.3.2-python3.11 (bump here; production may pin @sha256 digests).

# Stage 1: build the wheel of this project (no dependencies: the locked set is installed below).
FROM apache/airflow:3.3.2-python3.11 AS build
WORKDIR /src
COPY --chown=airflow:0 pyproject.toml README.md ./
COPY --chown=airflow:0 evals ./evals
COPY --chown=airflow:0 plugins ./plugins
COPY --chown=airflow:0 canary ./canary
COPY --chown=airflow:0 gateway ./gateway
RUN pip wheel --no-cache-dir --no-deps --wheel-dir /tmp/wheels .

# Stage 2: the runtime, non-root (the base image's airflow user, uid 50000).
FROM apache/airflow:3.3.2-python3.11
COPY --chown=airflow:0 requirements.txt /opt/tollgate/requirements.txt
COPY --from=build /tmp/wheels /tmp/wheels
# The locked control-plane set, minus Airflow itself (the base image pins its own constraints).
RUN grep -v -E '^apache-airflow(-core|-task-sdk)?==' /opt/tollgate/requirements.txt > /tmp/req.txt \
    && pip install --no-cache-dir -r /tmp/req.txt \
    && pip install --no-cache-dir --no-deps /tmp/wheels/*.whl \
    && rm -rf /tmp/wheels /tmp/req.txt
COPY --chown=airflow:0 dags /opt/airflow/dags
COPY --chown=airflow:0 thresholds /opt/tollgate/thresholds
COPY --chown=airflow:0 infra/k8s /opt/tollgate/infra/k8s
ENV TOLLGATE_THRESHOLDS=/opt/tollgate/thresholds \
    TOLLGATE_K8S_TEMPLATES=/opt/tollgate/infra/k8s \
    TOLLGATE_EXECUTION=kubernetes
USER 50000
HEALTHCHECK --interval=30s --timeout=10s --retries=5 CMD ["airflow", "jobs", "check", "--local"]
