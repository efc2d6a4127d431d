#!/bin/sh
# A throwaway PostgreSQL cluster for the specs, `make cluster` and the benchmarks: initdb and
# pg_ctl in a directory of its own, trust authentication on 127.0.0.1 only, a port of its own.
#
#   spec/support/pg.sh start DIR [PORT]   create (first time) and start a cluster in DIR; prints
#                                         its base URL postgres://USER@127.0.0.1:PORT/postgres
#                                         (a free port is picked when PORT is not given; starting
#                                         a cluster that runs already only prints its URL)
#   spec/support/pg.sh stop DIR [--rm]    stop it (fast, then immediate); --rm also deletes DIR
#   spec/support/pg.sh crash DIR          stop it as a crash would (immediate: no checkpoint,
#                                         connections cut; the next start replays the WAL)
#   spec/support/pg.sh url DIR            the base URL of the cluster running in DIR
#   spec/support/pg.sh env DIR CMD...     run CMD with SPEC_PG_URL set to that URL (ctest uses it)
#
# As root, the cluster runs as the `postgres` user (initdb refuses root): DIR is given to that
# user, so it must sit where that user can reach it (a directory right under /tmp is fine).
# The socket directory is DIR itself, so psql -h DIR also works. fsync stays on: the specs that
# kill servers and PostgreSQL check durability, so the cluster keeps PostgreSQL's own promise.
# Settings: PG_BIN (where initdb and pg_ctl are; default the newest /usr/lib/postgresql/*/bin),
# PG_USER (the user to run as when root; default postgres, else nobody).
set -eu

usage() { sed -n '5,13p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2; }

pg_bin() {
    if [ -n "${PG_BIN:-}" ]; then echo "$PG_BIN"; return; fi
    if [ -x /usr/lib/postgresql/15/bin/initdb ]; then echo /usr/lib/postgresql/15/bin; return; fi
    d=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
    if [ -n "$d" ]; then echo "$d"; return; fi
    command -v initdb >/dev/null 2>&1 && { dirname "$(command -v initdb)"; return; }
    echo "pg.sh: initdb not found (install postgresql-15, or set PG_BIN)" >&2
    exit 1
}

# Everything PostgreSQL runs goes through `as_pg`: as root, under the unprivileged user.
run_user() {
    if [ "$(id -u)" -ne 0 ]; then id -un; return; fi
    if [ -n "${PG_USER:-}" ]; then echo "$PG_USER"
    elif id postgres >/dev/null 2>&1; then echo postgres
    else echo nobody; fi
}
as_pg() {
    if [ "$(id -u)" -eq 0 ]; then
        if command -v runuser >/dev/null 2>&1; then runuser -u "$user" -- "$@"
        else setpriv --reuid="$user" --regid="$(id -g "$user")" --init-groups -- "$@"; fi
    else
        "$@"
    fi
}

# A port nobody listens on (IPv4 or IPv6), from /proc: no tool needed. Racy by nature, so start
# retries with another one when the postmaster cannot bind.
port_busy() {
    hex=$(printf '%04X' "$1")
    cat /proc/net/tcp /proc/net/tcp6 2>/dev/null | awk -v p=":$hex" '$4 == "0A" && substr($2, length($2) - 4) == p { f = 1 } END { exit !f }'
}
free_port() {
    while :; do
        r=$(od -An -N2 -tu2 /dev/urandom | tr -d ' ')
        p=$((20000 + r % 30000))
        port_busy "$p" || { echo "$p"; return; }
    done
}

abs_dir() { (cd "$1" && pwd); }

is_running() { [ -f "$dir/data/postmaster.pid" ] && as_pg "$bin/pg_ctl" -D "$dir/data" status >/dev/null 2>&1; }

base_url() { echo "postgres://$user@127.0.0.1:$(cat "$dir/port")/postgres"; }

cmd=${1:-}
[ $# -ge 2 ] || usage
dir=$2
user=$(run_user)
bin=$(pg_bin)

case $cmd in
start)
    [ $# -le 3 ] || usage
    want_port=${3:-}
    mkdir -p "$dir"
    dir=$(abs_dir "$dir")
    if [ "$(id -u)" -eq 0 ]; then
        chown "$user" "$dir"
        as_pg test -w "$dir" || {
            echo "pg.sh: user $user cannot write $dir (a parent directory is closed to it): use a directory right under /tmp" >&2
            exit 1
        }
    fi
    if is_running; then base_url; exit 0; fi
    if [ ! -f "$dir/data/PG_VERSION" ]; then
        as_pg "$bin/initdb" -D "$dir/data" --auth=trust --encoding=UTF8 --locale=C \
            --no-instructions >"$dir/initdb.log" 2>&1 || {
            echo "pg.sh: initdb failed:" >&2; cat "$dir/initdb.log" >&2; exit 1; }
        # The socket path must fit sockaddr_un (107 bytes); a longer DIR gets TCP only.
        sockdir=$dir
        [ ${#dir} -le 80 ] || sockdir=""
        cat >>"$dir/data/postgresql.conf" <<EOF

# pg.sh: loopback only, its own socket directory, the port from qc_port.conf.
listen_addresses = '127.0.0.1'
unix_socket_directories = '$sockdir'
fsync = on
max_connections = 300
shared_buffers = 32MB
include_if_exists = 'qc_port.conf'
EOF
    fi
    tries=0
    while :; do
        port=${want_port:-$(free_port)}
        echo "port = $port" | as_pg tee "$dir/data/qc_port.conf" >/dev/null
        if as_pg "$bin/pg_ctl" -D "$dir/data" -l "$dir/postgres.log" -w -t 60 start >/dev/null 2>&1; then
            break
        fi
        tries=$((tries + 1))
        # Another process took the port between the check and the bind: try another one.
        if [ -z "$want_port" ] && [ $tries -lt 5 ] && tail -n 20 "$dir/postgres.log" | grep -q "could not bind\|could not create any TCP/IP sockets"; then
            continue
        fi
        echo "pg.sh: postgres did not start; the end of $dir/postgres.log:" >&2
        tail -n 20 "$dir/postgres.log" >&2
        exit 1
    done
    echo "$port" | as_pg tee "$dir/port" >/dev/null
    # pg_ctl -w waits for the postmaster to say it is ready; this checks TCP itself answers.
    n=0
    until "$bin/pg_isready" -q -h 127.0.0.1 -p "$port" -U "$user" -d postgres; do
        n=$((n + 1))
        [ $n -lt 100 ] || { echo "pg.sh: postgres on port $port does not accept connections" >&2; exit 1; }
        sleep 0.1
    done
    base_url
    ;;
stop)
    [ $# -le 3 ] || usage
    [ -d "$dir" ] || exit 0
    dir=$(abs_dir "$dir")
    if [ -f "$dir/data/postmaster.pid" ]; then
        as_pg "$bin/pg_ctl" -D "$dir/data" -m fast -t 20 -w stop >/dev/null 2>&1 ||
            as_pg "$bin/pg_ctl" -D "$dir/data" -m immediate -t 20 -w stop >/dev/null 2>&1 || true
    fi
    if is_running; then echo "pg.sh: postgres in $dir did not stop" >&2; exit 1; fi
    if [ "${3:-}" = "--rm" ]; then rm -rf "$dir"; elif [ -n "${3:-}" ]; then usage; fi
    ;;
crash)
    [ $# -eq 2 ] || usage
    dir=$(abs_dir "$dir")
    is_running || { echo "pg.sh: no cluster runs in $dir" >&2; exit 1; }
    as_pg "$bin/pg_ctl" -D "$dir/data" -m immediate -t 20 -w stop >/dev/null
    ;;
url)
    dir=$(abs_dir "$dir")
    is_running || { echo "pg.sh: no cluster runs in $dir" >&2; exit 1; }
    base_url
    ;;
env)
    [ $# -ge 3 ] || usage
    dir=$(abs_dir "$dir")
    is_running || { echo "pg.sh: no cluster runs in $dir" >&2; exit 1; }
    url=$(base_url)
    shift 2
    SPEC_PG_URL=$url exec "$@"
    ;;
*) usage ;;
esac
