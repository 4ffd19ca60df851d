"""``python -m evals.launcher stop-all``: what ``tollgate stop`` runs; the code is evals.launcher.process."""

from evals.launcher.process import main

if __name__ == "__main__":
    from evals._cli import exit_with

    exit_with(main)
