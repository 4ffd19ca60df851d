"""Tollgate evaluation side: everything that runs inside a pod, and on a laptop as a CLI.

This package must never import Airflow.
"""
