"""``python -m canary.validate``: the users' canary command, judged over Prometheus (evals.canary.validate)."""
