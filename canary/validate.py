"""``python -m canary.validate --deployment NAME-canary --namespace ai-ENV --duration 900 ...``

The entry point the users' runbook and the Argo AnalysisTemplate call; the code is
:mod:`evals.canary.validate` (the progressive canary's analysis over Prometheus).
"""

from evals.canary.validate import main

if __name__ == "__main__":
    from evals._cli import exit_with

    exit_with(main)
