#!/bin/sh
# One-shot (docker-compose.yml's temporal-schema service, in temporalio/admin-tools): create
# Temporal's two databases in its PostgreSQL and bring their schemas up to date, as Temporal's
# own compose set-up does. Safe to run again: an existing database is kept, the schema updated.
set -eu
: "${POSTGRES_SEEDS:?names Temporal's PostgreSQL host}"
: "${POSTGRES_USER:?names Temporal's PostgreSQL user}"
: "${POSTGRES_PASSWORD_FILE:?names the file holding that user's password}"
SQL_PASSWORD="$(cat "$POSTGRES_PASSWORD_FILE")"
export SQL_PASSWORD
PORT="${DB_PORT:-5432}"
SCHEMA=/etc/temporal/schema/postgresql/v12

echo "waiting for PostgreSQL at $POSTGRES_SEEDS:$PORT"
tries=0
until nc -z -w 5 "$POSTGRES_SEEDS" "$PORT"; do
    tries=$((tries + 1))
    [ "$tries" -lt 60 ] || { echo "PostgreSQL not reachable"; exit 1; }
    sleep 2
done

for db in temporal temporal_visibility; do
    case "$db" in temporal) dir=temporal ;; *) dir=visibility ;; esac
    sql() { temporal-sql-tool --plugin postgres12 --ep "$POSTGRES_SEEDS" -p "$PORT" \
        -u "$POSTGRES_USER" --db "$db" "$@"; }
    sql create || echo "$db: exists already"
    sql setup-schema -v 0.0
    sql update-schema -d "$SCHEMA/$dir/versioned"
done
echo "Temporal's schema is up to date"
