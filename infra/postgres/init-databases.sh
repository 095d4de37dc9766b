#!/bin/sh
# One PostgreSQL server, one database per service: Prefect's and MLflow's.
# The postgres image runs this once, on the first start of an empty volume; it is
# also safe to run again by hand (a database already there is kept as it is).
set -eu

for database in prefect mlflow; do
  psql -v ON_ERROR_STOP=1 --username "${POSTGRES_USER}" --dbname postgres <<SQL
SELECT 'CREATE DATABASE ${database}'
WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = '${database}')\gexec
SQL
done
