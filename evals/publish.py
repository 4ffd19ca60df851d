"""``python -m evals.publish``: the pod command line; the code is evals.weights.publish."""

from evals.weights.publish import main

if __name__ == "__main__":
    from evals._cli import exit_with

    exit_with(main)
