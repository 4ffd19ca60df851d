"""The local backend: a pod step as a subprocess on the Airflow worker.

Same command and args as the pod, same env, secrets taken from the worker's
environment (masked in logs), the model claim mapped to
``TOLLGATE_HOME/volumes/<claim>``. The child runs in its own process group; a
task kill, a timeout or any error in the task ends that group, so no eval
keeps running after Airflow gave up on it.

What it cannot copy from Kubernetes: read-only mounts, resource limits and the
non-root/read-only-root sandbox are not enforced on a laptop.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseOperator
from airflow.sdk.exceptions import AirflowException

from tollgate import constants as c
from tollgate import settings
from tollgate.exceptions import TollgateError
from tollgate.operators.base import publish_exit_code, raise_for_exit
from tollgate.podspec import PodStep

if TYPE_CHECKING:
    from airflow.sdk import Context

# The pod image's interpreter is "python"; on a worker that is the worker's own, or for a
# step whose image is the serving/training one (torch, peft), the serving environment's.
_PYTHON_ALIASES = frozenset({"python", "python3"})
_INTERPRETERS = frozenset({"worker", "serve"})


def volumes_root() -> Path:
    """Where claims live on this machine: TOLLGATE_HOME/volumes."""
    return settings.evals_settings().home / c.LOCAL_VOLUMES_DIR


def local_mounts(step: PodStep, root: Path | None = None) -> dict[str, Path]:
    """Pod mount path -> local folder, for the mounts the step has."""
    if step.volume is None:
        return {}
    claim_dir = (root or volumes_root()) / step.volume.claim
    return {step.volume.mount_path: claim_dir, c.RESULTS_MOUNT_PATH: claim_dir / c.RESULTS_SUBPATH}


def map_path(value: str, mounts: dict[str, Path]) -> str:
    """Rewrite a pod path (or ``--flag=/pod/path``) to its local folder; other strings pass."""
    prefix, sep, rest = value.partition("=") if value.startswith("-") else ("", "", value)
    for mount in sorted(mounts, key=len, reverse=True):
        if rest == mount or rest.startswith(mount + "/"):
            return f"{prefix}{sep}{mounts[mount]}{rest[len(mount):]}"
    return value


class LocalPodOperator(BaseOperator):
    """Run a ``PodStep``'s command as a subprocess in its own process group."""

    template_fields: Sequence[str] = ("arguments", "env_vars", "results_uri")
    ui_color = "#e8f4e8"

    def __init__(
        self,
        *,
        step: PodStep,
        volumes_dir: str | os.PathLike[str] | None = None,
        kill_grace_s: float = 30.0,
        interpreter: str = "worker",
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if interpreter not in _INTERPRETERS:
            raise TollgateError(f"step {step.name}: interpreter {interpreter!r} must be one of {sorted(_INTERPRETERS)}")
        self.step = step
        self.interpreter = interpreter
        self.cmds = list(step.command)
        self.arguments = list(step.args)
        self.env_vars = dict(step.env)
        self.results_uri = step.results.uri if step.results else None
        self.volumes_dir = volumes_dir
        self.kill_grace_s = kill_grace_s
        self._proc: subprocess.Popen[bytes] | None = None
        self._killed = False

    # -- pieces, public so tests and the docs can show them ----------------------------
    def mounts(self) -> dict[str, Path]:
        return local_mounts(self.step, Path(self.volumes_dir) if self.volumes_dir else None)

    def local_argv(self) -> list[str]:
        mounts = self.mounts()
        argv = [map_path(a, mounts) for a in [*self.cmds, *self.arguments]]
        if argv[0] in _PYTHON_ALIASES:
            argv[0] = sys.executable if self.interpreter == "worker" else str(settings.evals_settings().serve_python)
        return argv

    def local_results(self) -> str | None:
        if self.results_uri is None:
            return None
        return map_path(self.results_uri, self.mounts())

    def child_env(self) -> dict[str, str]:
        """The worker's env, plus the step's env and secrets, with pod paths mapped."""
        mounts = self.mounts()
        env = dict(os.environ)
        env.update({k: map_path(v, mounts) for k, v in self.env_vars.items()})
        for secret in self.step.secret_env:
            value = os.environ.get(secret.env)
            if value is None:
                if secret.optional:
                    env.pop(secret.env, None)
                    continue
                raise TollgateError(
                    f"step {self.step.name}: {secret.env} (from Secret {secret.secret}, key {secret.key}) "
                    f"is not set in the worker's environment; the local backend reads secrets from there"
                )
            _mask(value)
            env[secret.env] = value
        env[c.EXECUTION_ENV] = c.ExecutionMode.LOCAL.value
        results = self.local_results()
        if results:
            env[c.RESULTS_ENV] = results
        env.setdefault("PYTHONUNBUFFERED", "1")
        return env

    # -- Airflow -----------------------------------------------------------------------
    def execute(self, context: Context) -> str | None:
        argv = self.local_argv()
        env = self.child_env()
        for folder in self.mounts().values():
            folder.mkdir(parents=True, exist_ok=True)
        results = self.local_results()
        if results and not results.startswith("s3://"):
            Path(results).parent.mkdir(parents=True, exist_ok=True)
        if self.step.uses_gpu:
            self.log.info("step %s asks for %d GPU(s); the local backend runs it on this machine as is",
                          self.step.name, self.step.resources.gpu)
        # argv is logged (it is in the DAG file anyway); env is not: it holds secrets.
        self.log.info("running step %s locally: %s", self.step.name, " ".join(argv))
        try:
            self._proc = subprocess.Popen(
                argv,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=env,
                cwd=str(c.REPO_ROOT),
                start_new_session=True,
            )
        except FileNotFoundError as exc:
            raise TollgateError(f"step {self.step.name}: cannot run {argv[0]!r}: {exc.strerror}") from None
        try:
            assert self._proc.stdout is not None
            for raw in iter(self._proc.stdout.readline, b""):
                self.log.info("%s", raw.decode(errors="replace").rstrip("\n"))
            exit_code = self._proc.wait()
        finally:
            # Timeout, kill or error in this task: the whole group goes, grandchildren too.
            self._stop_group()
            if self._proc.stdout is not None:
                self._proc.stdout.close()
            self._proc = None  # a later on_kill must not signal a group id the OS may reuse
        self.log.info("step %s exited with code %s", self.step.name, exit_code)
        if self._killed:
            raise AirflowException(f"step {self.step.name}: stopped by Airflow (task killed or timed out); "
                                   f"its process group was terminated (exit code {exit_code})")
        publish_exit_code(context, exit_code)
        # A failed gate still wrote its verdict: publish where, before failing the task.
        if results and (results.startswith("s3://") or Path(results).is_file()):
            context["ti"].xcom_push(key=c.XCOM_RESULTS, value=results)
        raise_for_exit(self.step.name, exit_code, results)
        return None

    def on_kill(self) -> None:
        # Only signals: execute() is still reading the pipe and closes it itself.
        self._killed = True
        self._stop_group()

    def _stop_group(self) -> None:
        proc = self._proc
        if proc is None:
            return
        from evals import launcher  # at run time: the dag-processor never pays for it

        launcher.stop_process_group(proc.pid, timeout_s=self.kill_grace_s, name=f"step {self.step.name}")
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=5)


def _mask(value: str) -> None:
    """Register a secret with Airflow's log masker (a no-op outside a task)."""
    with contextlib.suppress(Exception):
        from airflow.sdk.log import mask_secret

        mask_secret(value)
