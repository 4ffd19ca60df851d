"""Tollgate's MLflow layer: tracking conventions, the model registry, the alias audit trail.

    tracking  one experiment per model, a parent run per DAG run, a child run per suite
    audit     storage of the alias audit records (write, settle, read); decides nothing
    registry  versions, prompts, aliases: decides every alias move and writes its record

Imports go one way (registry -> audit -> tracking). ``import mlflow`` inside these
modules is absolute, so it is the MLflow library, never this package; it happens inside
functions only: DAG files import this layer at parse time.
"""
