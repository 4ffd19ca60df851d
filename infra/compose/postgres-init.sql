-- Run once by the postgres image on an empty data volume (docker-entrypoint-initdb.d).
-- POSTGRES_DB (airflow) is created by the image; MLflow gets its own database: both use
-- Alembic and a table named alembic_version, so they cannot share one.
CREATE DATABASE mlflow;
