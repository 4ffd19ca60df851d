"""``python -m evals.canary``: the pod command line; the code is evals.canary.cli."""

from evals.canary.cli import main

if __name__ == "__main__":
    from evals._cli import exit_with

    exit_with(main)
