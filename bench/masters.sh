#!/usr/bin/env bash
# masters.sh measures what replicating the index by Raft costs, in one run:
# the same cluster (three volumes, replicas 2, separate processes) with one
# master and with three, 1 KiB put→get→delete cycles and 1 MiB PUTs at
# concurrency 16; then, with three masters, a bench run with --retries
# through a SIGKILL of the leader. Run it on a quiet machine: `make
# perf-masters`.
#
# Needs: a built ./kvdb, curl and jq. Environment: KVDB (binary), DIR
# (data), PORT (base port; uses PORT..PORT+5, +1000 and +2000 of each).
set -euo pipefail

KVDB=${KVDB:-./kvdb}
DIR=${DIR:-./data/perf-masters}
PORT=${PORT:-3900}
OUT=$DIR/results
pids=()

cleanup() {
	for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
	wait 2>/dev/null || true
	pids=()
}
trap cleanup EXIT

rm -rf "$DIR"
mkdir -p "$OUT"

mpids=()
urls=()
# start N: N masters on PORT.., three volumes after them.
start() {
	local n=$1 i seeds="" common=(--cluster "perf-masters-$PORT-$1" --log-level warn)
	mpids=()
	urls=()
	for i in $(seq 0 $((n - 1))); do
		local p=$((PORT + i))
		"$KVDB" master --name "m$i" --addr 127.0.0.1:$p --gossip 127.0.0.1:$((p + 1000)) --raft 127.0.0.1:$((p + 2000)) \
			--bootstrap-expect "$n" ${seeds:+--join "$seeds"} --replicas 2 "${common[@]}" "$DIR/$n/m$i" 2>"$DIR/$n-m$i.log" &
		pids+=($!)
		mpids+=($!)
		urls+=("http://127.0.0.1:$p")
		seeds=${seeds:+$seeds,}127.0.0.1:$((p + 1000))
	done
	for i in 1 2 3; do
		local p=$((PORT + n - 1 + i))
		"$KVDB" volume --addr 127.0.0.1:$p --gossip 127.0.0.1:$((p + 1000)) --join "$seeds" --name "vol$i" \
			"${common[@]}" "$DIR/$n/vol$i" 2>"$DIR/$n-vol$i.log" &
		pids+=($!)
	done
	for _ in $(seq 150); do
		if curl -fsL "${urls[0]}/_kvdb/ready" >/dev/null 2>&1 && [ "$(leader)" != "" ]; then return; fi
		sleep 0.2
	done
	echo "cluster of $n masters not ready" >&2
	exit 1
}
# leader: the index (0..) of the master that leads, empty if none.
leader() {
	local i
	for i in "${!urls[@]}"; do
		if [ "$(curl -fs "${urls[$i]}/_kvdb/cluster" 2>/dev/null | jq -r '.masters.state // ""')" = Leader ]; then
			echo "$i"
			return
		fi
	done
}
allurls() { (IFS=,; echo "${urls[*]}"); }
bench() { # name, then bench flags
	local name=$1
	shift
	echo "== $name: kvdb bench $*" >&2
	"$KVDB" bench --url "$(allurls)" --json "$@" >"$OUT/$name.json"
}
row() { jq -r --arg op "$2" "[.ops[]?] | map(select(.op == \$op)) | first | .$3 // 0" "$OUT/$1.json"; }

for n in 1 3; do
	start $n
	bench "tiny$n" --size 1KiB --duration 10s --concurrency 16 --ops put,get,delete
	bench "put1m$n" --size 1MiB --count 1600 --concurrency 16 --ops put
	if [ "$n" = 3 ]; then
		l=$(leader)
		(sleep 4 && kill -9 "${mpids[$l]}") &
		bench failover --size 64KiB --duration 12s --concurrency 8 --ops put,get,delete --retries 5
	fi
	cleanup
done

printf '\n%-34s %14s %14s\n' "" "1 master" "3 masters"
printf '%-34s %14.0f %14.0f\n' "1 KiB put→get→delete cycles/s" "$(row tiny1 delete ops_per_sec)" "$(row tiny3 delete ops_per_sec)"
printf '%-34s %14.0f %14.0f\n' "PUT 1 MiB c16, MB/s" "$(row put1m1 put mb_per_sec)" "$(row put1m3 put mb_per_sec)"
ms() { awk -v n="$(row "$1" "$2" "$3")" 'BEGIN {printf "%.1f", n / 1e6}'; }
printf '%-34s %14s %14s\n' "PUT 1 MiB c16, p50 / p99 ms" "$(ms put1m1 put p50_ns) / $(ms put1m1 put p99_ns)" "$(ms put1m3 put p50_ns) / $(ms put1m3 put p99_ns)"
echo
echo "bench --retries 5 through a SIGKILL of the leader (3 masters, 64 KiB put,get,delete, c8, 12 s):"
jq -r '.ops[] | "  \(.op): \(.count) ops, \(.errors) failed, \(.retried // 0) retried"' "$OUT/failover.json"
