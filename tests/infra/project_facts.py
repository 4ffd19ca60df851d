"""What the deployment files under test are checked against: the project's own declarations.

- every ``TOLLGATE_*`` variable with its default (evals/settings.py, plugins/tollgate/settings.py);
- Airflow's configuration options (its config.yml and the installed providers'), so an
  ``AIRFLOW__SECTION__KEY`` or a Helm ``config.section.key`` that Airflow does not know fails;
- image tags written in the Dockerfiles' headers (``docker build -f ... -t TAG .``).
"""

from __future__ import annotations

import re
from functools import lru_cache
from pathlib import Path

from evals import settings
from tollgate.settings import AirflowSettings

REPO_ROOT = Path(__file__).resolve().parents[2]
DOCKER_DIR = REPO_ROOT / "infra" / "docker"
VARIABLE = re.compile(r"\bTOLLGATE_[A-Z0-9_]*[A-Z0-9]\b")


def declared() -> dict[str, settings.EnvVar]:
    """Every TOLLGATE_* variable of both settings objects, by name."""
    out = {v.name: v for v in settings.variables(settings.Settings)}
    out.update({v.name: v for v in settings.variables(AirflowSettings)})
    return out


def default_of(name: str) -> str | None:
    return declared()[name].default


def parse_settings(environ: dict[str, str]) -> None:
    """Both settings objects from ``environ`` (raises BadInput naming a bad TOLLGATE_* value)."""
    settings.load(settings.Settings, environ)
    settings.load(AirflowSettings, environ)


@lru_cache(maxsize=1)
def _airflow_description() -> dict:
    from airflow.configuration import retrieve_configuration_description

    return retrieve_configuration_description(include_providers=True)


def airflow_options() -> dict[str, set[str]]:
    """Airflow's configuration sections and their options (core and the installed providers)."""
    return {section: set(body.get("options", {})) for section, body in _airflow_description().items()}


def airflow_default(section: str, key: str) -> str:
    return str(_airflow_description()[section]["options"][key]["default"])


def unknown_airflow_env(names: list[str]) -> list[str]:
    """The AIRFLOW__SECTION__KEY names (and their _CMD/_SECRET forms) Airflow has no option for."""
    options = airflow_options()
    bad = []
    for name in names:
        m = re.fullmatch(r"AIRFLOW__([A-Z0-9_]+?)__([A-Z0-9_]+)", name)
        if not m:
            continue
        section, key = m.group(1).lower(), m.group(2).lower()
        key = re.sub(r"_(cmd|secret)$", "", key) if key not in options.get(section, set()) else key
        if key not in options.get(section, set()):
            bad.append(name)
    return bad


def dockerfile_tag(dockerfile: str) -> str:
    """The image tag a Dockerfile's header says it is built as."""
    text = (REPO_ROOT / dockerfile).read_text()
    m = re.search(rf"docker build -f {re.escape(dockerfile)} -t (\S+) \.", text)
    assert m, f"{dockerfile}: no `docker build -f {dockerfile} -t TAG .` line in its header"
    return m.group(1)


def dockerfile_froms(dockerfile: str) -> list[str]:
    return [ln.split()[1] for ln in (REPO_ROOT / dockerfile).read_text().splitlines() if ln.startswith("FROM ")]


def locked_version(package: str, lock: str = "requirements.txt") -> str:
    m = re.search(rf"^{re.escape(package)}==(\S+)$", (REPO_ROOT / lock).read_text(), re.MULTILINE)
    assert m, f"{package} is not pinned in {lock}"
    return m.group(1)
