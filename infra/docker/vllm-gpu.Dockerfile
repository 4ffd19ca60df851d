# syntax=docker/dockerfile:1.7
# Serving on GPU nodes: the official vLLM OpenAI image, pinned, run non-root. Default of
# TOLLGATE_VLLM_IMAGE's upstream (tollgate.constants.DEFAULT_VLLM_IMAGE); weights come from the
# model PVC at /models (staged by evals.stage), so nothing is downloaded at start.
# Base pinned by version: vllm/vllm-openai:v0.11.0 (bump here; production may pin @sha256 digests).

# One stage adds nothing the runtime needs; a second keeps the pin and the user in one place.
FROM vllm/vllm-openai:v0.11.0 AS upstream

FROM upstream
RUN groupadd --gid 1000 tollgate && useradd --uid 1000 --gid 1000 --no-create-home --shell /usr/sbin/nologin tollgate
ENV HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 VLLM_NO_USAGE_STATS=1 HOME=/tmp
USER 1000:1000
EXPOSE 8000
HEALTHCHECK --interval=30s --timeout=5s --start-period=600s --retries=3 \
    CMD ["python3", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/health', timeout=3)"]
ENTRYPOINT ["python3", "-m", "vllm.entrypoints.openai.api_server"]
