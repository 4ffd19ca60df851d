"""What the Airflow side and the pods agree on, written once.

- the suites: ``SUITES`` (every judged suite), ``EVAL_SUITES`` (those ``evals.run`` runs;
  latency is ``evals.benchmark``);
- the exit codes (docs/ARCHITECTURE.md; 0 pass, 1 a gate or check failed, 2 bad input);
- the one model name / version pattern, what a user types into the DAG Params and into
  ``--model NAME:VERSION``;
- the layout of one run's results folder (``RunFolder``);
- the environment a pod reads that the Airflow side sets (``JUDGE_API_KEY_ENV``).

No third-party imports and no Airflow: plugins/ imports this at DAG parse time, pods at
start-up.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from evals.errors import EXIT_BAD_INPUT, EXIT_FAIL, EXIT_PASS, BadInput

__all__ = [
    "EVAL_SUITES", "EXIT_BAD_INPUT", "EXIT_FAIL", "EXIT_PASS", "JUDGE_API_KEY_ENV", "MODEL_NAME_PATTERN",
    "MODEL_REF_HELP", "MODEL_VERSION_PATTERN", "STORAGE_NAME", "SUITES", "InvalidModelRef", "RunFolder", "is_model_name",
    "is_model_version", "model_ref", "validate_model_ref",
]

SUITES = ("quality", "safety", "latency")
EVAL_SUITES = ("quality", "safety")

# JSON-schema patterns (the DAG Params use them as they are); no spaces, slashes or shell characters.
MODEL_NAME_PATTERN = r"^[a-z0-9][a-z0-9._-]{0,62}$"
MODEL_VERSION_PATTERN = r"^[0-9]{1,9}$"  # MLflow's registered versions: 1, 2, 3, ...
MODEL_REF_HELP = "NAME:VERSION, e.g. smollm2-orders:1"
# A NAME or VERSION folder of the weights store (s3://bucket/.../NAME/VERSION, and the model
# volume): wider than the registry's pattern on purpose (the weights pipeline publishes
# and stages any safe folder name, "v2.1" included); never "." or "..", no slashes.
STORAGE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
_MODEL_NAME = re.compile(MODEL_NAME_PATTERN)
_MODEL_VERSION = re.compile(MODEL_VERSION_PATTERN)

# The judge's API key in an eval pod (from the judge's Kubernetes Secret); the judge client
# reads it first and falls back to the model's key.
JUDGE_API_KEY_ENV = "TOLLGATE_JUDGE_API_KEY"


class InvalidModelRef(BadInput):
    """A model name or version that does not match the one pattern (bad input, exit 2)."""


def is_model_name(value: object) -> bool:
    return isinstance(value, str) and _MODEL_NAME.fullmatch(value) is not None


def is_model_version(value: object) -> bool:
    return isinstance(value, str) and _MODEL_VERSION.fullmatch(value) is not None


def validate_model_ref(name: object, version: object | None = None) -> None:
    """Raise ``InvalidModelRef`` naming the part (and the pattern) that is wrong.

    ``version=None`` checks the name only. Versions are strings, as users type them.
    """
    if not is_model_name(name):
        raise InvalidModelRef(f"model name {name!r} must match {MODEL_NAME_PATTERN}")
    if version is not None and not is_model_version(version):
        raise InvalidModelRef(f"model version {version!r} must match {MODEL_VERSION_PATTERN}")


def model_ref(name: str, version: str) -> str:
    """NAME:VERSION: what ``--model`` takes and the name the server serves the version under."""
    return f"{name}:{version}"


@dataclass(frozen=True)
class RunFolder:
    """The files of one DAG run about one version, under ``root``.

    The same layout is seen from three places, so ``root`` is whichever applies: the pod's
    path (``/results/<folder>``), the path on the results volume (``<folder>``), or the
    local folder behind it on an Airflow worker. ``root`` may be an Airflow template.
    """

    root: str

    def file(self, name: str) -> str:
        return f"{self.root.rstrip('/')}/{name}"

    def results(self, suite: str) -> str:
        """The suite's results JSON (the one results schema)."""
        return self.file(f"{suite}.json")

    def verdict(self, suite: str) -> str:
        """``evals.gate_check --output`` for the suite."""
        return self.file(f"{suite}.verdict.json")

    def report(self, suite: str) -> str:
        """``evals.gate_check --report`` for the suite (the markdown table)."""
        return self.file(f"{suite}.report.md")

    def baseline(self, suite: str) -> str:
        """The champion's results for the suite, the regression baseline."""
        return self.file(f"baseline/{suite}.json")

    @property
    def prompts(self) -> str:
        """The version's prompt set, as ``evals.run --prompts`` reads it."""
        return self.file("prompts/quality.yaml")

    @property
    def canary(self) -> str:
        """``evals.canary --output``."""
        return self.file("canary.json")
