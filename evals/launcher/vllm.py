"""vLLM's OpenAI-compatible server for the embedded default: CPU, offline, loopback only."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from evals import settings
from evals.errors import BadInput
from evals.launcher.process import ServerSpec


def vllm_spec(
    model_dir: str | os.PathLike[str],
    served_name: str,
    port: int | None = None,
    *,
    max_model_len: int = 2048,
    extra_args: Sequence[str] = (),
    name: str = "vllm",
) -> ServerSpec:
    """vLLM's OpenAI-compatible server from the serving environment, on CPU, offline."""
    env_settings = settings.current()
    port = port if port is not None else env_settings.vllm_port
    model_dir = Path(model_dir)
    if not (model_dir / "config.json").is_file():
        raise BadInput(f"model folder {model_dir} has no config.json (run ./tollgate setup to convert SmolLM2)")
    argv = [
        str(settings.serve_python()), "-m", "vllm.entrypoints.openai.api_server",
        "--model", str(model_dir),
        "--served-model-name", served_name,
        "--host", settings.LOOPBACK, "--port", str(port),
        "--max-model-len", str(max_model_len),
        "--enforce-eager",  # ~30 s start instead of ~107 s on CPU; no graph capture to win on 2 cores
        "--dtype", "bfloat16",
        "--seed", "0",
        *extra_args,
    ]
    env = {
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "VLLM_NO_USAGE_STATS": "1",
        "DO_NOT_TRACK": "1",
        "VLLM_CPU_KVCACHE_SPACE": os.environ.get("VLLM_CPU_KVCACHE_SPACE", "1"),
        **cpu_threads_env(env_settings.vllm_cpu_threads),
        "VLLM_TARGET_DEVICE": "cpu",
        "PYTHONUNBUFFERED": "1",
    }
    return ServerSpec(name=name, argv=argv, port=port, port_env=settings.var_name(settings.Settings, "vllm_port"),
                      env=env, ready_timeout_s=env_settings.vllm_ready_timeout_s,
                      # every vLLM the project starts is scraped by the embedded Prometheus while it runs
                      scrape_job="vllm", scrape_labels={"served_model": served_name})


def cpu_threads_env(threads: int, cores: int | None = None) -> dict[str, str]:
    """vLLM-cpu's thread placement: ``threads`` unpinned OpenMP threads (0: half the cores, at least 1).

    vLLM's "auto" binding pins the compute threads of every instance to the same cores
    (on 2 cores: all of them on core 0, the other "reserved"), so the production slot, a
    candidate loading its weights and an evaluation server queue on one core while the
    other idles. Unpinned, the kernel spreads them. A VLLM_CPU_OMP_THREADS_BIND set by
    the user wins, with vLLM's own thread count.
    """
    if "VLLM_CPU_OMP_THREADS_BIND" in os.environ:
        return {}
    cores = cores if cores is not None else (len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity")
                                             else os.cpu_count() or 1)
    n = threads or max(1, cores // 2)
    return {"VLLM_CPU_OMP_THREADS_BIND": "nobind", "OMP_NUM_THREADS": str(n)}
