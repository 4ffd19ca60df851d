"""``python -m evals.drift``: the pod command line; the code is evals.drift.cli."""

from evals.drift.cli import main

if __name__ == "__main__":
    from evals._cli import exit_with

    exit_with(main)
