#!/bin/sh
# One database and one owner per service (and the web front's sessions): no service can read another's tables.
set -eu
for service in referrals fulfilment actions reporting web; do
    password_var="$(echo "${service}" | tr a-z A-Z)_DB_PASSWORD"
    password="$(printenv "$password_var")"
    psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname postgres <<SQL
CREATE ROLE kt_${service} LOGIN PASSWORD '${password}';
CREATE DATABASE kt_${service} OWNER kt_${service};
REVOKE ALL ON DATABASE kt_${service} FROM PUBLIC;
SQL
done
