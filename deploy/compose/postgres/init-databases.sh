#!/usr/bin/env bash
# Run once by the postgres image on an empty data volume (docker-entrypoint-initdb.d), as the
# superuser: one database per service, owned by the service's owner role (which runs
# `migrate`), and an application role for its processes, a member of the group role the
# migrations grant their rights to. The group roles are created here first so the
# application roles can join them before the migrations run (the migrations create them only
# when missing). No role is a superuser or has BYPASSRLS: row-level security binds them all.
set -euo pipefail

service() {  # <service> <group role> <owner password> <app password>
  psql --no-psqlrc -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname postgres \
    -v db="consentry_$1" -v owner="consentry_$1_owner" -v app="consentry_$1_app" \
    -v grp="$2" -v owner_password="$3" -v app_password="$4" <<'SQL'
CREATE ROLE :"owner" LOGIN PASSWORD :'owner_password';
CREATE ROLE :"grp" NOLOGIN;
CREATE ROLE :"app" LOGIN PASSWORD :'app_password' IN ROLE :"grp";
CREATE DATABASE :"db" OWNER :"owner";
REVOKE ALL ON DATABASE :"db" FROM PUBLIC;
GRANT CONNECT ON DATABASE :"db" TO :"grp";
SQL
}

service consent consentry_consent_rw "$CONSENT_OWNER_DB_PASSWORD" "$CONSENT_APP_DB_PASSWORD"
service preferences consentry_preferences_rw \
  "$PREFERENCES_OWNER_DB_PASSWORD" "$PREFERENCES_APP_DB_PASSWORD"
service subprocessors consentry_subprocessors_rw \
  "$SUBPROCESSORS_OWNER_DB_PASSWORD" "$SUBPROCESSORS_APP_DB_PASSWORD"
service audit consentry_audit_writer "$AUDIT_OWNER_DB_PASSWORD" "$AUDIT_APP_DB_PASSWORD"

# The audit migration 0002 creates its group role unconditionally (and ignores "exists"):
# PostgreSQL checks CREATEROLE before it looks, so the audit owner needs that attribute.
psql --no-psqlrc -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname postgres \
  -c 'ALTER ROLE consentry_audit_owner CREATEROLE'
