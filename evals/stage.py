"""``python -m evals.stage``: the pod command line; the code is evals.weights.stage."""

from evals.weights.stage import main

if __name__ == "__main__":
    from evals._cli import exit_with

    exit_with(main)
