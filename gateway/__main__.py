"""``python -m gateway``."""

from evals._cli import exit_with
from gateway.server import main

exit_with(main)
