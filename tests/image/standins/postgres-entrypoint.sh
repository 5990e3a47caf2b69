#!/bin/sh
# The official postgres image's start-up, as far as compose.scale-out.yaml relies on it: a new
# data directory gets a cluster whose superuser is $POSTGRES_USER (password $POSTGRES_PASSWORD,
# scram-sha-256 over TCP) and a database $POSTGRES_DB; then the server runs as `postgres`.
set -eu
BIN=$(ls -d /usr/lib/postgresql/*/bin | tail -n 1)
if [ "$(id -u)" = 0 ]; then
    mkdir -p "$PGDATA" /var/run/postgresql
    chown postgres:postgres "$PGDATA" /var/run/postgresql
    chmod 700 "$PGDATA"
    exec setpriv --reuid=postgres --regid=postgres --init-groups "$0" "$@"
fi
if [ ! -s "$PGDATA/PG_VERSION" ]; then
    printf '%s\n' "$POSTGRES_PASSWORD" > /tmp/pwfile
    "$BIN/initdb" -D "$PGDATA" -U "$POSTGRES_USER" --pwfile=/tmp/pwfile -E UTF8 \
        --auth-local=trust --auth-host=scram-sha-256
    rm -f /tmp/pwfile
    echo "host all all all scram-sha-256" >> "$PGDATA/pg_hba.conf"
    "$BIN/pg_ctl" -D "$PGDATA" -w -o "-c listen_addresses=''" start
    "$BIN/createdb" -U "$POSTGRES_USER" "$POSTGRES_DB"
    "$BIN/pg_ctl" -D "$PGDATA" -w stop
fi
if [ "${1:-}" = postgres ]; then shift; fi
exec "$BIN/postgres" -D "$PGDATA" -c listen_addresses='*' "$@"
