"""Reading a finished dag.test() run: task states and XComs, straight from the metadata DB."""

from __future__ import annotations

from typing import Any


def task_states(dag_run: Any) -> dict[str, str]:
    return {ti.task_id: str(ti.state.value if hasattr(ti.state, "value") else ti.state)
            for ti in dag_run.get_task_instances()}


def xcom(dag_run: Any, task_id: str, key: str = "return_value") -> Any:
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session

    with create_session() as session:
        query = XComModel.get_many(run_id=dag_run.run_id, dag_ids=dag_run.dag_id, task_ids=task_id, key=key)
        row = session.scalars(query).first()
        return None if row is None else XComModel.deserialize_value(row)


def run_dag_test(dag: Any, **test_kwargs: Any) -> Any:
    """dag.test() for a DAG object built by a test (Airflow 3 only runs DAGs it has serialized).

    dag.test() looks the DAG up in the metadata DB after re-parsing its bundle; a DAG
    built in a test with its own dag_id is not in any bundle file, so it is written
    to the DB first, under the default bundle.
    """
    from airflow.dag_processing.bundles.manager import DagBundlesManager
    from airflow.dag_processing.dagbag import DagBag, sync_bag_to_db

    DagBundlesManager().sync_bundles_to_db()
    bag = DagBag(collect_dags=False)
    bag.bag_dag(dag)
    sync_bag_to_db(bag, "dags-folder", None)
    return dag.test(**test_kwargs)
