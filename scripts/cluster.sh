#!/bin/sh
# Several instances on one machine (`make cluster N=3`): a throwaway PostgreSQL cluster
# (spec/support/pg.sh) and N `quantcoach serve` sharing it through QC_STORE_URL, on consecutive
# ports from QC_PORT, all on 127.0.0.1. Logs and the cluster live in a temp directory; Ctrl-C
# (or TERM to this script or to the make that runs it) stops every process it started and
# deletes the database cluster, keeping the logs.
#
#   scripts/cluster.sh [N]            N instances (default 3; or N in the environment)
#
# Settings: QC_PORT (the first port, 8000), QC_BIN (build/quantcoach), CLUSTER_DIR (the temp
# directory, made under /tmp by default; it must be reachable by the postgres user when run as
# root). Every other setting (.env, QC_*, LIVEKIT_*) reaches the servers as `serve` reads it.
# Once all listen it prints one line per instance and `cluster: ready`, and writes the URLs to
# CLUSTER_DIR/urls (one a line) and the store's URL to CLUSTER_DIR/store_url, for scripts.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)
pg=$root/spec/support/pg.sh
bin=${QC_BIN:-$root/build/quantcoach}
n=${1:-${N:-3}}
first=${QC_PORT:-8000}
case $n in ''|*[!0-9]*) echo "cluster: N must be a number of instances, not '$n'" >&2; exit 2 ;; esac
case $first in ''|*[!0-9]*) echo "cluster: QC_PORT must be a port number, not '$first'" >&2; exit 2 ;; esac
[ "$n" -ge 1 ] && [ "$n" -le 64 ] || { echo "cluster: N must be 1 to 64" >&2; exit 2; }
[ $((first + n - 1)) -le 65535 ] || { echo "cluster: ports $first.. do not fit below 65536" >&2; exit 2; }
[ -x "$bin" ] || { echo "cluster: $bin not found: run make build first (or set QC_BIN)" >&2; exit 2; }
# QC_PORT and N are this script's, not the server's: it would warn about an unknown setting.
unset QC_PORT N

dir=${CLUSTER_DIR:-$(mktemp -d /tmp/qc_cluster.XXXXXX)}
mkdir -p "$dir"
# As root, the postgres user must reach $dir/pg: others may search $dir, not list it.
chmod 711 "$dir"
pids=""
stopping=0

stop_all() {
    [ $stopping -eq 0 ] || return 0
    stopping=1
    trap '' INT TERM
    for p in $pids; do kill -TERM "$p" 2>/dev/null || true; done
    for p in $pids; do wait "$p" 2>/dev/null || true; done
    sh "$pg" stop "$dir/pg" --rm || true
    echo "cluster: stopped; logs in $dir"
}
trap 'stop_all' EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

base=$(sh "$pg" start "$dir/pg")
# One database for the store, beside the maintenance database `postgres`.
psql -X -q -v ON_ERROR_STOP=1 -d "$base" -c "CREATE DATABASE quantcoach" >/dev/null
store_url=${base%/postgres}/quantcoach
echo "$store_url" >"$dir/store_url"
echo "cluster: postgres $store_url (log $dir/pg/postgres.log)"

i=1
while [ "$i" -le "$n" ]; do
    port=$((first + i - 1))
    QC_STORE_URL=$store_url "$bin" serve --listen "127.0.0.1:$port" --data "$dir/data-$i" \
        >"$dir/server-$i.log" 2>&1 </dev/null &
    pids="$pids $!"
    i=$((i + 1))
done

# Each listens (or has exited: then its log says why).
: >"$dir/urls"
i=1
for p in $pids; do
    port=$((first + i - 1))
    log=$dir/server-$i.log
    t=0
    until grep -q "listening address=" "$log" 2>/dev/null || grep -q '"msg":"listening"' "$log" 2>/dev/null; do
        if ! kill -0 "$p" 2>/dev/null || [ $t -ge 300 ]; then
            echo "cluster: instance $i (port $port) did not start; its log:" >&2
            tail -n 20 "$log" >&2
            exit 1
        fi
        t=$((t + 1))
        sleep 0.1
    done
    echo "http://127.0.0.1:$port" >>"$dir/urls"
    echo "cluster: instance $i http://127.0.0.1:$port pid $p (log $log)"
    i=$((i + 1))
done
echo "cluster: ready; Ctrl-C stops all"

# Until a signal, until every instance has ended by itself, or until whoever started us is
# gone: `make cluster` killed with TERM dies without passing the signal on, and would leave
# the servers and PostgreSQL running with nobody to stop them.
parent=$PPID
while :; do
    alive=0
    for p in $pids; do kill -0 "$p" 2>/dev/null && alive=1; done
    [ $alive -eq 1 ] || break
    kill -0 "$parent" 2>/dev/null || { echo "cluster: parent $parent is gone" >&2; exit 143; }
    sleep 0.5
done
