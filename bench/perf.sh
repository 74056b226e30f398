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

cpu() { awk '{print $14 + $15}' "/proc/$1/stat"; } # utime+stime, clock ticks
mbytes() { curl -fs "$URL/_kvdb/metrics" | awk '/^kvdb_request_bytes_total\{role="master"\}/ {print $2}'; }
# measured NAME FLAGS...: a bench run with the master's CPU seconds and the
# request bytes it received during it.
measured() {
	local name=$1 c0 b0
	c0=$(cpu "$master")
	b0=$(mbytes)
	bench "$@"
	echo "$(($(cpu "$master") - c0)) $(awk -v a="$(mbytes)" -v b="$b0" 'BEGIN {printf "%.0f", a - b}')" >"$OUT/$name.master"
}
mcpu() { awk '{printf "%.2f", $1 / 100}' "$OUT/$1.master"; }
mbin() { awk '{printf "%.1f", $2 / 1048576}' "$OUT/$1.master"; }

measured put1g_proxy --size 1GiB --count 2 --concurrency 1 --ops put --expect -1
measured put1g_redir --size 1GiB --count 2 --concurrency 1 --ops put
measured put1m_proxy --size 1MiB --count 1600 --concurrency 16 --ops put --expect -1
bench get1g --size 1GiB --count 3 --concurrency 1 --ops get
baseline base1g --size 1GiB --count 2 --concurrency 1
measured put1m --size 1MiB --count 1600 --concurrency 16 --ops put
bench get1m --size 1MiB --count 3200 --concurrency 16 --ops get
baseline base1m --size 1MiB --count 800 --concurrency 16
bench tiny --size 1KiB --duration 10s --concurrency 16 --ops put,get,delete
redirect=""
if command -v wrk >/dev/null; then
	curl -fs -X PUT --data-binary hot "$URL/perf-hot" >/dev/null
	echo "== redirect: wrk -t2 -c64 -d10s $URL/perf-hot" >&2
	redirect=$(wrk -t2 -c64 -d10s "$URL/perf-hot" | awk '/Requests\/sec/ {printf "%.0f", $2}')
fi

put1g=$(row put1g_redir put mb_per_sec)
put1gp=$(row put1g_proxy put mb_per_sec)
put1mp=$(row put1m_proxy put mb_per_sec)
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
| PUT 1 GiB, replicas 2, redirected to a volume | $(mb "$put1g") | write+fsync $(mb "$w1g") ÷ 2 replicas = $(mb "$(awk -v w="$w1g" 'BEGIN {print w / 2}')") | $(ratio "$put1g" "$(awk -v w="$w1g" 'BEGIN {print w / 2}')") | ≥ 75 % |
| PUT 1 GiB, replicas 2, through the master (--expect -1) | $(mb "$put1gp") | | $(ratio "$put1gp" "$(awk -v w="$w1g" 'BEGIN {print w / 2}')") | |
| PUT 1 MiB, concurrency 16, replicas 2, redirected | $(mb "$put1m") | write+fsync $(mb "$w1m") | | ≥ 500 MB/s |
| PUT 1 MiB, concurrency 16, replicas 2, through the master | $(mb "$put1mp") | | | |
| put→get→delete of 1 KiB, 16 workers | $(printf "%.0f" "$tiny") cycles/s | | | ≥ 3,000/s |
| redirect of an existing key (wrk -t2 -c64) | ${redirect:-n/a} req/s | | | ≥ 70,000/s |

The master's CPU seconds and the request bytes it received, per phase:
2 GiB redirected $(mcpu put1g_redir) s, $(mbin put1g_redir) MiB; 2 GiB through it $(mcpu put1g_proxy) s, $(mbin put1g_proxy) MiB;
1600 × 1 MiB redirected $(mcpu put1m) s, $(mbin put1m) MiB; through it $(mcpu put1m_proxy) s, $(mbin put1m_proxy) MiB.

Peak RSS (VmHWM) over the whole run: master $(hwm "$master") MB, volumes ${vh% } MB.
Reports: $OUT/*.json
EOF
