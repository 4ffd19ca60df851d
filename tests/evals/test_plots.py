"""evals.plots draws the approval page's plots from results and verdict rows (PNG files)."""

from __future__ import annotations

from evals import plots

PNG = b"\x89PNG\r\n\x1a\n"


def test_the_three_plots_are_pngs(tmp_path) -> None:
    lat = {"samples": [{"id": i, "e2e_ms": 100.0 + i, "error": None, "warmup": False} for i in range(20)]}
    q = {"samples": [{"id": f"q{i}", "task": ("a", "b")[i % 2], "error": None,
                      "scores": {"task_success_rate": float(i % 3 == 0)}} for i in range(12)]}
    rows = [{"name": "regression", "suite": "quality", "delta_vs_baseline": -0.01, "delta_ci_low": -0.05,
             "delta_ci_high": 0.03, "delta_n": 12}, {"name": "p95", "delta_vs_baseline": None}]
    made = [plots.latency_cdf(lat, lat, tmp_path / "l.png", ("m:2", "m:1")),
            plots.per_category(q, q, tmp_path / "c.png", ("m:2", "m:1")),
            plots.paired_deltas(rows, tmp_path / "d.png")]
    for path in made:
        assert path is not None and path.read_bytes()[:8] == PNG


def test_missing_data_draws_nothing(tmp_path) -> None:
    assert plots.latency_cdf({"samples": []}, None, tmp_path / "l.png", ("a", "b")) is None
    assert plots.per_category({}, None, tmp_path / "c.png", ("a", "b")) is None
    assert plots.paired_deltas([{"name": "x", "delta_vs_baseline": 0.1}], tmp_path / "d.png") is None
    assert not list(tmp_path.iterdir())
