#!/bin/sh
# PostgreSQL for the tests, on a machine that may have none: installed from
# Debian's packages when missing, its cluster made and started, and the access
# the tests expect given to it: 127.0.0.1:5432, user postgres, trust, database
# `test`. Safe to run again: a server that already answers is left alone.
set -eu

answers() {
    psql -h 127.0.0.1 -p 5432 -U postgres -d test -tAc 'select 1' >/dev/null 2>&1
}

if command -v psql >/dev/null 2>&1 && answers; then
    exit 0
fi

root() {
    if [ "$(id -u)" != 0 ]; then
        echo "PostgreSQL for the tests needs root to $1 (or start your own at 127.0.0.1:5432, user postgres, trust, database test)." >&2
        exit 1
    fi
}

if ! ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1 || ! command -v pg_ctlcluster >/dev/null 2>&1; then
    root "install it from Debian's packages"
    echo "Installing PostgreSQL from Debian's packages..."
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null
fi

version=$(ls /usr/lib/postgresql | sort -V | tail -n 1)
conf=/etc/postgresql/$version/main
root "start it"
if [ ! -f "$conf/postgresql.conf" ]; then
    # No cluster (or only what a purge left behind, such as our conf.d file): make one.
    rm -rf "$conf"
    pg_createcluster "$version" main >/dev/null
fi
mkdir -p "$conf/conf.d"

# Loopback is trusted for the tests; local sockets keep Debian's peer rule.
if ! grep -q 'kent-together tests' "$conf/pg_hba.conf"; then
    cat > "$conf/pg_hba.conf" <<HBA
# Written by kent-together deploy/tools/test-postgres.sh: a test server, trust on loopback.
local   all             postgres                                peer
local   all             all                                     peer
host    all             all             127.0.0.1/32            trust
host    all             all             ::1/128                 trust
HBA
fi
# A test server: durability is not what is under test, and the suite opens many connections.
cat > "$conf/conf.d/kent-together-tests.conf" <<CONF
listen_addresses = 'localhost'
port = 5432
max_connections = 300
fsync = off
synchronous_commit = off
full_page_writes = off
CONF

pg_ctlcluster --skip-systemctl-redirect "$version" main restart >/dev/null 2>&1 \
    || pg_ctlcluster --skip-systemctl-redirect "$version" main start
for _ in $(seq 1 60); do
    pg_isready -h 127.0.0.1 -p 5432 -q && break
    sleep 0.5
done
psql -h 127.0.0.1 -p 5432 -U postgres -d postgres -tAc "select 1 from pg_database where datname = 'test'" | grep -q 1 \
    || psql -h 127.0.0.1 -p 5432 -U postgres -d postgres -qc 'create database test'
answers || { echo "PostgreSQL started but 127.0.0.1:5432/test does not answer as postgres" >&2; exit 1; }
echo "PostgreSQL $version for the tests at 127.0.0.1:5432 (user postgres, database test)."
