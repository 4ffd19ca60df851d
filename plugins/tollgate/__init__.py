"""Tollgate's Airflow side: the pod task factory, model serving, registry, approvals.

Importable from Airflow's ``plugins/`` folder. Keep this module light: DAG files
import from here at parse time.
"""
