#!/usr/bin/env bash
# perf.sh measures README's Performance table in one run: a master and three
# volumes as separate processes on this machine (replicas 2, every write
# fsynced), kvdb bench against them, the machine's own limits with the same
# sizes (kvdb bench --baseline-only), wrk for the redirect, and each
# process's peak RSS. Run it on a quiet machine: `make perf`.
#
# Needs: a built ./kvdb, curl, jq, and wrk for the redirect row (skipped
# without it). Environment: KVDB (binary), DIR (data, on the disk to
# measure), PORT (base port; uses PORT..PORT+3 and PORT+1000..PORT+1003).
set -euo pipefail

KVDB=${KVDB:-./kvdb}
DIR=${DIR:-./data/perf}
PORT=${PORT:-3800}
URL=http://127.0.0.1:$PORT
OUT=$DIR/results
pids=()

cleanup() {
	for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
	wait 2>/dev/null || true
}
trap cleanup EXIT

rm -rf "$DIR"
mkdir -p "$OUT"
common=(--cluster "perf-$PORT" --log-level warn)
"$KVDB" master --addr 127.0.0.1:$PORT --gossip 127.0.0.1:$((PORT + 1000)) --replicas 2 \
	"${common[@]}" "$DIR/master" 2>"$DIR/master.log" &
pids+=($!)
master=$!
vols=()
for i in 1 2 3; do
	"$KVDB" volume --addr 127.0.0.1:$((PORT + i)) --gossip 127.0.0.1:$((PORT + 1000 + i)) \
		--join 127.0.0.1:$((PORT + 1000)) --name "vol$i" "${common[@]}" "$DIR/vol$i" 2>"$DIR/vol$i.log" &
	pids+=($!)
	vols+=($!)
done
for _ in $(seq 100); do
	if curl -fs "$URL/_kvdb/ready" >/dev/null; then break; fi
	sleep 0.2
done
curl -fs "$URL/_kvdb/ready" >/dev/null || { echo "cluster not ready" >&2; exit 1; }

bench() { # name, then bench flags
	local name=$1
	shift
	echo "== $name: kvdb bench $*" >&2
	"$KVDB" bench --url "$URL" --json "$@" >"$OUT/$name.json"
}
baseline() { # name, then bench flags
	local name=$1
	shift
	echo "== $name: kvdb bench --baseline-only $*" >&2
	"$KVDB" bench --baseline-only --baseline-dir "$DIR/baseline" --json "$@" >"$OUT/$name.json"
}
# row FILE OP FIELD: one figure of one row (op) of a report.
row() { jq -r --arg op "$2" "[.ops[]?, .baseline[]?] | map(select(.op == \$op)) | first | .$3 // 0" "$OUT/$1.json"; }
hwm() { awk '/VmHWM/ {printf "%.0f", $2 / 1024}' "/proc/$1/status"; }

bench get1g --size 1GiB --count 3 --concurrency 1 --ops get
baseline base1g --size 1GiB --count 2 --concurrency 1
bench put1m --size 1MiB --count 1600 --concurrency 16 --ops put
bench get1m --size 1MiB --count 3200 --concurrency 16 --ops get
baseline base1m --size 1MiB --count 800 --concurrency 16
bench tiny --size 1KiB --duration 10s --concurrency 16 --ops put,get,delete
redirect=""
if command -v wrk >/dev/null; then
	curl -fs -X PUT --data-binary hot "$URL/perf-hot" >/dev/null
	echo "== redirect: wrk -t2 -c64 -d10s $URL/perf-hot" >&2
	redirect=$(wrk -t2 -c64 -d10s "$URL/perf-hot" | awk '/Requests\/sec/ {printf "%.0f", $2}')
fi

put1g=$(row get1g "put (setup)" mb_per_sec)
get1g=$(row get1g get mb_per_sec)
put1m=$(row put1m put mb_per_sec)
get1m=$(row get1m get mb_per_sec)
tiny=$(row tiny put ops_per_sec)
w1g=$(row base1g write+fsync mb_per_sec)
s1g=$(row base1g "sendfile get" mb_per_sec)
w1m=$(row base1m write+fsync mb_per_sec)
s1m=$(row base1m "sendfile get" mb_per_sec)
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.0f %%", 100 * a / b; else print "-" }'; }
mb() { awk -v a="$1" 'BEGIN { printf "%.0f MB/s", a }'; }

vh=""
for p in "${vols[@]}"; do vh+="$(hwm "$p") "; done
cat <<EOF

| workload | kvdb | baseline (same run) | kvdb / baseline | target |
| --- | --- | --- | --- | --- |
| GET 1 GiB (redirect followed, sendfile) | $(mb "$get1g") | sendfile server $(mb "$s1g") | $(ratio "$get1g" "$s1g") | ≥ 90 % |
| GET 1 MiB, concurrency 16 | $(mb "$get1m") | sendfile server $(mb "$s1m") | $(ratio "$get1m" "$s1m") | ≥ 80 % |
| PUT 1 GiB, replicas 2 | $(mb "$put1g") | write+fsync $(mb "$w1g") ÷ 2 replicas = $(mb "$(awk -v w="$w1g" 'BEGIN {print w / 2}')") | $(ratio "$put1g" "$(awk -v w="$w1g" 'BEGIN {print w / 2}')") | ≥ 60 % |
| PUT 1 MiB, concurrency 16, replicas 2 | $(mb "$put1m") | write+fsync $(mb "$w1m") | | ≥ 500 MB/s |
| put→get→delete of 1 KiB, 16 workers | $(printf "%.0f" "$tiny") cycles/s | | | ≥ 3,000/s |
| redirect of an existing key (wrk -t2 -c64) | ${redirect:-n/a} req/s | | | ≥ 70,000/s |

Peak RSS (VmHWM) over the whole run: master $(hwm "$master") MB, volumes ${vh% } MB.
Reports: $OUT/*.json
EOF
