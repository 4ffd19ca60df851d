"""Pod steps as Airflow tasks: ``pod_task(step)`` picks the backend (cosmos-style modes).

    from tollgate.operators import pod_task
    from tollgate.podspec import PodStep

Backends live in ``local.py`` and ``kubernetes.py`` on the shared ``base.py``; they
are imported only when chosen, so a local DAG never loads the Kubernetes client.
"""

from tollgate.operators.base import KubernetesTarget, execution_mode, outcome_for_exit
from tollgate.operators.factory import pod_task

__all__ = ["KubernetesTarget", "execution_mode", "outcome_for_exit", "pod_task"]
