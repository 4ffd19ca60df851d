"""`python -m evals.benchmark` end to end: against stream stubs (load shapes, faults) and the real vLLM."""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

from evals import catalogue
from evals._cli import run_main
from evals.benchmark import main
from evals.launcher import free_port
from tests.fixtures.stream_stub import stream_stubs  # noqa: F401 - fixture
from tests.fixtures.vllm import TEST_MODEL

REPO_ROOT = Path(__file__).resolve().parents[2]
THRESHOLD_METRICS = ["latency_p50_ms", "latency_p95_ms", "latency_p99_ms", "requests_per_second"]
METRIC_NAMES = THRESHOLD_METRICS + [
    f"{m}_p{q}_ms" for m in ("ttft", "tpot", "itl") for q in (50, 95, 99)] + [
    "output_tokens_per_second", "error_rate", "timeout_rate", "goodput_rps"]


def bench(tmp_path: Path, url: str, *extra: str, model: str = "stub:1") -> tuple[int, dict]:
    out = tmp_path / "latency.json"
    code = run_main(main, ["--model", model, "--endpoint", url, "--output", str(out), *extra])
    return code, (json.loads(out.read_text()) if out.exists() else {})


def test_closed_loop_writes_metrics_samples_and_cdf(tmp_path, stream_stubs):  # noqa: F811
    url = stream_stubs.url(tokens=8)
    code, res = bench(tmp_path, url, "--concurrent-users", "4", "--duration", "1", "--warmup", "0.5",
                      "--max-tokens", "6")
    assert code == 0
    m = res["metrics"]
    assert all(isinstance(m[name], (int, float)) for name in METRIC_NAMES), m
    assert m["error_rate"] == 0 and m["timeout_rate"] == 0 and m["requests_ok"] > 0
    assert m["mean_output_tokens"] == 6  # the stub honours max_tokens; usage is read
    assert m["requested_concurrency"] == 4 and m["peak_in_flight"] <= 4
    assert "requested_rate_rps" not in m  # closed loop: no rate was asked for
    assert catalogue.LATENCY.undeclared(m) == []  # every name written is one a gate may bound
    assert m["connections_opened"] == 4  # keep-alive: one connection per user for the whole run
    assert res["meta"]["model"] == "stub" and res["meta"]["version"] == "1"
    assert res["meta"]["suite"] == "latency" and res["meta"]["config"]["load"]["mode"] == "closed"
    samples = res["samples"]
    warm = [s for s in samples if s["warmup"]]
    # scheduled before the window opened at 500 ms (rounded to the microsecond: 499.9996 reads 500.0)
    assert warm and all(s["scheduled_ms"] <= 500 for s in warm), [s["scheduled_ms"] for s in warm]
    assert len(samples) - len(warm) == m["requests_measured"]
    png = tmp_path / "latency_cdf.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and res["meta"]["cdf_png"] == png.name


def test_ttft_and_itl_are_measured_from_send_not_from_headers(tmp_path, stream_stubs):  # noqa: F811
    # The stub sends headers at once, then the first token after 40 ms and one token every 10 ms.
    url = stream_stubs.url(ttft_ms=40, itl_ms=10)
    code, res = bench(tmp_path, url, "--concurrent-users", "2", "--duration", "1", "--warmup", "0",
                      "--max-tokens", "5")
    assert code == 0
    m = res["metrics"]
    samples = res["samples"]
    assert len(samples) == m["requests_ok"] > 0
    # Lower bounds that causality guarantees for every request, however loaded the machine:
    # no token before the stub's 40 ms, the last of 5 tokens no sooner than 4 x 10 ms after it.
    assert min(s["ttft_ms"] for s in samples) >= 40
    assert min(s["e2e_ms"] for s in samples) >= 40 + 4 * 10
    # ... and no client sees a token before the stub handed it to the socket.
    with urllib.request.urlopen(url + "/stats") as resp:
        delivered = json.load(resp)
    assert delivered["ttft_delivered_count"] == len(samples)
    assert min(s["ttft_ms"] for s in samples) >= delivered["ttft_delivered_min_ms"] >= 40
    assert m["itl_p50_ms"] > 0 and m["tpot_p50_ms"] > 0
    for s in samples:
        assert s["output_tokens"] == 5 and s["e2e_ms"] >= s["ttft_ms"]
        assert s["tpot_ms"] == pytest.approx((s["e2e_ms"] - s["ttft_ms"]) / 4, abs=0.01)


def test_open_loop_reports_shortfall_and_client_queue(tmp_path, stream_stubs):  # noqa: F811
    # 200 req/s requested, one slot, and every request takes >= 20 ms: at most 50 req/s can be sent.
    url = stream_stubs.url(ttft_ms=20)
    code, res = bench(tmp_path, url, "--request-rate", "200", "--max-concurrency", "1", "--duration", "1",
                      "--warmup", "0", "--max-tokens", "2", "--seed", "7")
    assert code == 0
    m = res["metrics"]
    assert m["requested_rate_rps"] == 200 and m["requested_concurrency"] == 1
    assert catalogue.LATENCY.undeclared(m) == []
    assert m["peak_in_flight"] == 1
    assert m["delivered_rate_rps"] < 100
    assert m["client_queue_p95_ms"] > m["latency_p50_ms"]  # arrivals wait behind earlier requests
    # The backlog left when the window ends is counted, not sent: one slot of >= 20 ms sends at most
    # ~50 of the ~200 arrivals, and draining the rest would stretch the run past its duration.
    assert m["requests_measured"] <= 51
    assert m["requests_measured"] + m["requests_unsent"] > 150
    assert res["meta"]["config"]["load"] == {"mode": "open", "request_rate": 200.0, "max_concurrency": 1,
                                             "arrivals": "poisson", "seed": 7}


def test_goodput_applies_the_slos_from_the_command_line(tmp_path, stream_stubs):  # noqa: F811
    url = stream_stubs.url(ttft_ms=30)
    code, res = bench(tmp_path, url, "--concurrent-users", "2", "--duration", "1", "--warmup", "0",
                      "--slo-ttft-ms", "5")
    assert code == 0
    m = res["metrics"]
    assert m["requests_per_second"] > 0 and m["goodput_rps"] == 0  # no request can beat a 30 ms TTFT
    assert res["meta"]["config"]["slo"]["ttft_ms"] == 5


@pytest.mark.parametrize(
    ("fault", "status", "reason"),
    [
        ("500", "error", "http 500"),
        ("close", "error", "connection closed by server mid-stream"),
        ("malformed", "error", "malformed SSE event (not JSON)"),
        ("stall", "timeout", "timeout mid-stream (stalled after first token)"),
    ],
)
def test_faulty_server_requests_are_counted_with_reasons_and_the_run_finishes(
        tmp_path, stream_stubs, fault, status, reason):  # noqa: F811
    url = stream_stubs.url(fault=fault, fault_every=2)
    code, res = bench(tmp_path, url, "--concurrent-users", "4", "--duration", "1", "--warmup", "0",
                      "--request-timeout", "0.3")
    assert code == 0
    m = res["metrics"]
    failed = [s for s in res["samples"] if s["status"] != "ok" and not s["warmup"]]
    assert failed and all(s["status"] == status and s["error"] == reason for s in failed)
    assert res["errors"] == {reason: len(failed)}
    assert m["error_rate"] == pytest.approx(len(failed) / m["requests_measured"])
    assert m["timeout_rate"] == (m["error_rate"] if status == "timeout" else 0)
    assert 0.2 < m["error_rate"] < 0.8  # every second request is faulty; the others still succeed
    assert m["requests_ok"] > 0 and m["latency_p50_ms"] is not None


def test_stale_keep_alive_connection_is_retried_once_on_a_new_one(tmp_path, stream_stubs):  # noqa: F811
    # One user; the stub drops every 2nd request without answering. Each drop hits a connection
    # that already served a request (stale keep-alive), so the retry on a new connection succeeds.
    url = stream_stubs.url(fault="drop", fault_every=2)
    code, res = bench(tmp_path, url, "--concurrent-users", "1", "--duration", "0.5", "--warmup", "0")
    assert code == 0
    m = res["metrics"]
    assert m["error_rate"] == 0 and m["requests_ok"] >= 2
    assert m["stale_connection_retries"] >= m["requests_ok"] - 1
    assert m["connections_opened"] == m["stale_connection_retries"] + 1


def test_a_fresh_connection_closed_without_response_is_an_error_not_retried(tmp_path, stream_stubs):  # noqa: F811
    url = stream_stubs.url(fault="drop", fault_every=1)
    code, res = bench(tmp_path, url, "--concurrent-users", "2", "--duration", "0.3", "--warmup", "0")
    assert code == 1
    assert res["errors"] == {"connection closed by server before first token": res["metrics"]["requests_measured"]}
    assert res["metrics"]["stale_connection_retries"] == 0


def test_all_requests_failing_writes_results_and_exits_1(tmp_path, stream_stubs, capsys):  # noqa: F811
    url = stream_stubs.url(fault="500", fault_every=1)
    code, res = bench(tmp_path, url, "--concurrent-users", "2", "--duration", "0.5", "--warmup", "0")
    assert code == 1
    assert res["metrics"]["error_rate"] == 1.0 and res["metrics"]["latency_p50_ms"] is None
    assert "no measured request succeeded" in capsys.readouterr().err


def test_unknown_model_is_bad_input_naming_served_models(tmp_path, stream_stubs, capsys):  # noqa: F811
    url = stream_stubs.url(models=("stub:1", "other:2"))
    code, res = bench(tmp_path, url, "--duration", "1", model="missing:1")
    err = capsys.readouterr().err
    assert code == 2 and res == {}
    assert "missing:1" in err and "stub:1, other:2" in err and len(err.strip().splitlines()) == 1


def test_unreachable_endpoint_exits_2_with_one_line(tmp_path):
    port = free_port()  # nothing listens there
    proc = subprocess.run(
        [sys.executable, "-m", "evals.benchmark", "--model", "m:1", "--endpoint", f"http://127.0.0.1:{port}",
         "--duration", "5", "--output", str(tmp_path / "x.json")],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    lines = [ln for ln in proc.stderr.splitlines() if "error:" in ln]
    assert len(lines) == 1 and "unreachable" in lines[0] and str(port) in lines[0]
    assert not (tmp_path / "x.json").exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--model", "no-version"], "NAME:VERSION"),
        (["--model", "m:1", "--concurrent-users", "2", "--request-rate", "5"], "exclude each other"),
        (["--model", "m:1", "--max-concurrency", "2"], "--request-rate"),
        (["--model", "m:1", "--endpoint", "localhost:8000"], "--endpoint"),
        (["--model", "m:1", "--warmup", "-1"], "--warmup"),
    ],
)
def test_bad_flags_are_bad_input(tmp_path, capsys, args, message):
    code = run_main(main, [*args, "--output", str(tmp_path / "x.json")])
    assert code == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "x.json").exists()


def test_argparse_rejects_non_positive_numbers(tmp_path):
    with pytest.raises(SystemExit) as exc:
        main(["--model", "m:1", "--duration", "0", "--output", str(tmp_path / "x.json")])
    assert exc.value.code == 2


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("", "no prompts"),
        ('{"prompt": "ok"}\n{not json\n', "line 2: not valid JSON"),
        ('{"prompt": "ok"}\n\n{"prompt": "  "}\n', "line 3: needs a non-empty"),
        ('["a"]\n', "line 1: expected an object"),
    ],
)
def test_bad_prompts_file_names_file_and_line(tmp_path, stream_stubs, capsys, content, message):  # noqa: F811
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text(content)
    code, _ = bench(tmp_path, stream_stubs.url(), "--prompts", str(prompts))
    err = capsys.readouterr().err
    assert code == 2 and "prompts.jsonl" in err and message in err


def test_prompts_file_messages_are_sent(tmp_path, stream_stubs):  # noqa: F811
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text('{"messages": [{"role": "user", "content": "hi"}]}\n{"prompt": "yo"}\n')
    code, res = bench(tmp_path, stream_stubs.url(), "--prompts", str(prompts), "--concurrent-users", "1",
                      "--duration", "0.3", "--warmup", "0", "--api", "completions")
    assert code == 0 and res["metrics"]["requests_ok"] > 0
    assert res["meta"]["config"]["prompts_count"] == 2 and len(res["meta"]["prompts_sha256"]) == 64


def test_benchmark_does_not_import_airflow():
    code = ("import sys, evals.benchmark, evals.loadgen; "
            "sys.exit(any(m == 'airflow' or m.startswith('airflow.') for m in sys.modules))")
    assert subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, timeout=60).returncode == 0


@pytest.mark.integration
def test_short_run_against_real_vllm(tmp_path, vllm_server):
    out = tmp_path / "latency.json"
    proc = subprocess.run(
        [sys.executable, "-m", "evals.benchmark", "--model", TEST_MODEL, "--endpoint", vllm_server.openai_url,
         "--concurrent-users", "4", "--duration", "10", "--warmup", "0", "--max-tokens", "16",
         "--output", str(out)],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr[-2000:]
    res = json.loads(out.read_text())
    m = res["metrics"]
    assert m["requests_ok"] >= 4 and m["error_rate"] == 0 and m["timeout_rate"] == 0
    assert 0 < m["mean_output_tokens"] <= 16  # from vLLM's usage block
    assert 0 < m["ttft_p50_ms"] <= m["latency_p50_ms"] <= m["latency_p99_ms"]
    assert m["tpot_p50_ms"] > 0 and m["output_tokens_per_second"] > 0
    assert res["meta"]["model"] == "smollm2-orders" and res["meta"]["version"] == "1"
    assert (tmp_path / "latency_cdf.png").stat().st_size > 0
    assert "latency ms" in proc.stdout
