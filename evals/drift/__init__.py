"""Drift of production traffic: reference vs current window of the gateway's request log.

``python -m evals.drift`` (cli.py) reads two windows (or a stored reference summary),
checks each window (checks.py, Great Expectations), extracts features (features.py),
computes the statistics (stats.py, embedding.py) against the reference summary
(reference.py) and writes a results file that ``evals.gate_check`` judges with
thresholds/drift.yaml.
"""
