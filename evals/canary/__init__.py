"""The canary: watch a candidate beside the stable model and decide, promote or roll back.

    cli.py       python -m evals.canary: flags, policy, verdict file
    traffic.py   the replayed sample, arm configs, request bodies, sending
    stats.py     pure decisions: sticky assignment, scoring, Welch's t-test, the verdict
"""
