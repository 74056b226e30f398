#!/usr/bin/env bash
# perf.sh measures README's Performance table in one run: a master and three
# volumes as separate processes on this machine (replicas 2, every write
# fsynced), kvdb bench against them, the machine's own limits with the same
# sizes (kvdb bench --baseline-only), wrk for the redirect, and each
# process's peak RSS. Run it on a quiet machine: `make perf`.
#
# The S3 rows: vol1 also serves S3 (--s3 on PORT+90), so S3 bytes go
# client -> that volume's gateway -> the replicas. aws cli (v1, multipart,
# S3_CHUNK parts, default 8MB as its own default) copies a 1 GiB file of
# random bytes up and down, kvdb bench --s3 sends 1 GiB and 1 MiB
# PutObjects (Signature V4, UNSIGNED-PAYLOAD), all against the native rows
# of the same run. aws runs under /usr/bin/time for its own peak RSS.
#
# Needs: a built ./kvdb, curl, jq, wrk for the redirect row and aws for
# the aws cli rows (each skipped without it). Environment: KVDB (binary),
# DIR (data, on the disk to measure), PORT (base port; uses PORT..PORT+3,
# PORT+90 and PORT+1000..PORT+1003), S3_CHUNK, ONLY=s3 (the S3 rows and
# the native 1 GiB rows only: for profiling, not for README).
set -euo pipefail

KVDB=${KVDB:-./kvdb}
DIR=${DIR:-./data/perf}
PORT=${PORT:-3800}
URL=http://127.0.0.1:$PORT
S3URL=http://127.0.0.1:$((PORT + 90))
S3_CHUNK=${S3_CHUNK:-8MB}
ONLY=${ONLY:-}
OUT=$DIR/results
pids=()

cleanup() {
	for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
	# A volume that still holds values drains on SIGTERM, which with the
	# master gone never ends: a second SIGTERM makes it leave at once.
	sleep 1
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
	s3=()
	if [ "$i" = 1 ]; then s3=(--s3 "127.0.0.1:$((PORT + 90))"); fi
	"$KVDB" volume "${s3[@]}" --addr 127.0.0.1:$((PORT + i)) --gossip 127.0.0.1:$((PORT + 1000 + i)) \
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
row() { [ -f "$OUT/$1.json" ] || { echo 0; return; }; jq -r --arg op "$2" "[.ops[]?, .baseline[]?] | map(select(.op == \$op)) | first | .$3 // 0" "$OUT/$1.json"; }
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

if [ "$ONLY" = s3 ]; then
	measured put1g_redir --size 1GiB --count 2 --concurrency 1 --ops put
	bench get1g --size 1GiB --count 3 --concurrency 1 --ops get
else
	measured put1g_proxy --size 1GiB --count 2 --concurrency 1 --ops put --expect -1
	measured put1g_redir --size 1GiB --count 2 --concurrency 1 --ops put
	measured put1m_proxy --size 1MiB --count 1600 --concurrency 16 --ops put --expect -1
	bench get1g --size 1GiB --count 3 --concurrency 1 --ops get
	baseline base1g --size 1GiB --count 2 --concurrency 1
	measured put1m --size 1MiB --count 1600 --concurrency 16 --ops put
	bench get1m --size 1MiB --count 3200 --concurrency 16 --ops get
	baseline base1m --size 1MiB --count 800 --concurrency 16
	# The small-value cycles, three runs of 10 s: a shared machine swings
	# by a third from one run to the next, so the row gives their median.
	# The servers' CPU over the three, and their fsyncs when perf(1) may
	# count syscalls (root, tracepoints).
	tc0=()
	for p in "${pids[@]}"; do tc0+=("$(cpu "$p")"); done
	perfpid=""
	if command -v perf >/dev/null && perf stat -e syscalls:sys_enter_fsync true >/dev/null 2>&1; then
		perf stat -x, -e syscalls:sys_enter_fsync,syscalls:sys_enter_fdatasync -p "$(IFS=,; echo "${pids[*]}")" \
			-o "$OUT/tiny.fsyncs" sleep 30 &
		perfpid=$!
	fi
	for i in 1 2 3; do
		bench "tiny$i" --size 1KiB --duration 10s --concurrency 16 --ops put,get,delete
	done
	if [ -n "$perfpid" ]; then wait "$perfpid" || true; fi
	tcpu=""
	for i in "${!pids[@]}"; do tcpu+="$(($(cpu "${pids[$i]}") - tc0[i])) "; done
	echo "$tcpu" >"$OUT/tiny.cpu"
	# The same cycles with 16, 32 and 64 workers, one run each, with the
	# servers' CPU during each: when the cycles a second rise with the
	# workers while the servers' CPU stays put, each cycle's round trips,
	# not the CPU, bound the rate at 16.
	servers_cpu() { local p s=0; for p in "${pids[@]}"; do s=$((s + $(cpu "$p"))); done; echo "$s"; }
	for c in 16 32 64; do
		s0=$(servers_cpu)
		bench "tinyc$c" --size 1KiB --duration 10s --concurrency "$c" --ops put,get,delete
		echo $(($(servers_cpu) - s0)) >"$OUT/tinyc$c.cpu"
	done
fi

# S3: bench --s3 (the gateway's own cost), then aws cli.
s3bench() { # name, then bench flags
	local name=$1
	shift
	echo "== $name: kvdb bench --s3 --url $S3URL $*" >&2
	"$KVDB" bench --s3 --url "$S3URL" --json "$@" >"$OUT/$name.json"
}
c0=$(cpu "$master")
s3bench s3put1g --size 1GiB --count 2 --concurrency 1 --ops put --prefix perfs3/g/
echo "$(($(cpu "$master") - c0))" >"$OUT/s3put1g.mcpu"
s3bench s3get1g --size 1GiB --count 3 --concurrency 1 --ops get --prefix perfs3/gg/
c0=$(cpu "$master")
s3bench s3put1m --size 1MiB --count 1600 --concurrency 16 --ops put --prefix perfs3/m/
echo "$(($(cpu "$master") - c0))" >"$OUT/s3put1m.mcpu"
awsup="" awsdown="" awsrss_up="" awsrss_down=""
if command -v aws >/dev/null; then
	export AWS_CONFIG_FILE=$DIR/aws.config AWS_SHARED_CREDENTIALS_FILE=$DIR/aws.credentials
	export AWS_ACCESS_KEY_ID=perf AWS_SECRET_ACCESS_KEY=perf-secret AWS_DEFAULT_REGION=us-east-1
	cat >"$AWS_CONFIG_FILE" <<CFG
[default]
region = us-east-1
endpoint_url = $S3URL
s3 =
    multipart_threshold = 8MB
    multipart_chunksize = $S3_CHUNK
    max_concurrent_requests = 10
CFG
	: >"$AWS_SHARED_CREDENTIALS_FILE"
	head -c 1G /dev/urandom >"$DIR/s3.bin"
	sync
	aws --endpoint-url "$S3URL" s3 mb s3://perfaws >/dev/null
	# timed AWS_ARGS...: seconds; aws's peak RSS (KB) and its own CPU
	# seconds (user, system) into $DIR/aws.rss. aws cli is Python: on 2
	# cores its own CPU bounds what it moves, whatever the server.
	timed() {
		local t0 t1
		t0=$(date +%s.%N)
		/usr/bin/time -f "%M %U %S" -o "$DIR/aws.rss" aws --endpoint-url "$S3URL" "$@" >/dev/null
		t1=$(date +%s.%N)
		awk -v a="$t0" -v b="$t1" 'BEGIN {printf "%.2f", b - a}'
	}
	echo "== aws s3 cp 1 GiB up ($S3_CHUNK parts)" >&2
	c0=$(cpu "$master")
	awsup=$(timed s3 cp "$DIR/s3.bin" s3://perfaws/1g)
	echo "$(($(cpu "$master") - c0))" >"$OUT/awsput.mcpu"
	awsrss_up=$(awk '{printf "%.0f", $1 / 1024}' "$DIR/aws.rss")
	awscpu_up=$(awk '{printf "%.1f", $2 + $3}' "$DIR/aws.rss")
	echo "== aws s3 cp 1 GiB down" >&2
	awsdown=$(timed s3 cp s3://perfaws/1g "$DIR/s3.got")
	awsrss_down=$(awk '{printf "%.0f", $1 / 1024}' "$DIR/aws.rss")
	awscpu_down=$(awk '{printf "%.1f", $2 + $3}' "$DIR/aws.rss")
	cmp "$DIR/s3.bin" "$DIR/s3.got" || { echo "aws s3 cp: the 1 GiB read back differs" >&2; exit 1; }
	rm -f "$DIR/s3.bin" "$DIR/s3.got"
fi

redirect=""
if [ "$ONLY" != s3 ] && command -v wrk >/dev/null; then
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
tinyruns=""
tinycycles=0
for i in 1 2 3; do
	tinyruns+="$(row "tiny$i" put ops_per_sec) "
	tinycycles=$((tinycycles + $(printf "%.0f" "$(row "tiny$i" put count)")))
done
tiny=$(echo "$tinyruns" | tr ' ' '\n' | grep . | sort -g | sed -n 2p)
w1g=$(row base1g write+fsync mb_per_sec)
s1g=$(row base1g "sendfile get" mb_per_sec)
w1m=$(row base1m write+fsync mb_per_sec)
s1m=$(row base1m "sendfile get" mb_per_sec)
s3put1g=$(row s3put1g put mb_per_sec)
s3get1g=$(row s3get1g get mb_per_sec)
s3put1m=$(row s3put1m put mb_per_sec)
s3put1mops=$(row s3put1m put ops_per_sec)
put1mops=$(row put1m put ops_per_sec)
# aws cli moves 1 GiB = 1073.7 MB.
awsmb() { [ -n "$1" ] && awk -v t="$1" 'BEGIN {printf "%.0f", 1073.741824 / t}' || echo 0; }
awsupmb=$(awsmb "$awsup")
awsdownmb=$(awsmb "$awsdown")
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.0f %%", 100 * a / b; else print "-" }'; }
mb() { awk -v a="$1" 'BEGIN { printf "%.0f MB/s", a }'; }

vh=""
for p in "${vols[@]}"; do vh+="$(hwm "$p") "; done
# tinyline: the 1 KiB cycles' CPU per cycle (master, then each volume) and
# fsyncs per cycle.
tinyline() {
	local cycles=$tinycycles n
	[ -f "$OUT/tiny.cpu" ] && [ "$cycles" -gt 0 ] 2>/dev/null || return 0
	printf '1 KiB runs: %s cycles/s (the row: their median).\n' "$(for r in $tinyruns; do printf '%.0f ' "$r"; done | sed 's/ $//; s/ /, /g')"
	printf 'Per 1 KiB cycle (%s cycles in the three): CPU ms' "$cycles"
	for t in $(cat "$OUT/tiny.cpu"); do awk -v t="$t" -v c="$cycles" 'BEGIN {printf " %.2f", t * 10 / c}'; done
	printf ' (master, vol1..3)'
	if [ -f "$OUT/tiny.fsyncs" ]; then
		n=$(awk -F, '/sys_enter_f/ {s += $1} END {print s + 0}' "$OUT/tiny.fsyncs")
		awk -v n="$n" -v c="$cycles" 'BEGIN {printf "; fsyncs %.2f (fsync and fdatasync, all servers)", n / c}'
	fi
	echo
	# The worker sweep: cycles a second and the CPUs the four servers used.
	local sweep=""
	for c in 16 32 64; do
		[ -f "$OUT/tinyc$c.cpu" ] || continue
		sweep+=$(printf '%d: %.0f cycles/s, the servers using %s CPUs; ' "$c" "$(row "tinyc$c" put ops_per_sec)" \
			"$(awk -v t="$(cat "$OUT/tinyc$c.cpu")" -v e="$(row "tinyc$c" put elapsed_ns)" 'BEGIN {printf "%.2f", (e > 0 ? t / 100 / (e / 1e9) : 0)}')")
	done
	[ -n "$sweep" ] && printf 'Workers, one run each (no perf counting): %s.' "${sweep%; }"
	echo
}
cat <<EOF

| workload | kvdb | baseline (same run) | kvdb / baseline | target |
| --- | --- | --- | --- | --- |
| GET 1 GiB (redirect followed, sendfile) | $(mb "$get1g") | sendfile server $(mb "$s1g") | $(ratio "$get1g" "$s1g") | ≥ 90 % |
| GET 1 MiB, concurrency 16 | $(mb "$get1m") | sendfile server $(mb "$s1m") | $(ratio "$get1m" "$s1m") | ≥ 80 % |
| PUT 1 GiB, replicas 2, redirected to a volume | $(mb "$put1g") | write+fsync $(mb "$w1g") ÷ 2 replicas = $(mb "$(awk -v w="$w1g" 'BEGIN {print w / 2}')") | $(ratio "$put1g" "$(awk -v w="$w1g" 'BEGIN {print w / 2}')") | ≥ 75 % |
| PUT 1 GiB, replicas 2, through the master (--expect -1) | $(mb "$put1gp") | | $(ratio "$put1gp" "$(awk -v w="$w1g" 'BEGIN {print w / 2}')") | |
| PUT 1 MiB, concurrency 16, replicas 2, redirected | $(mb "$put1m") | write+fsync $(mb "$w1m") | | ≥ 500 MB/s |
| PUT 1 MiB, concurrency 16, replicas 2, through the master | $(mb "$put1mp") | | | |
| put→get→delete of 1 KiB, 16 workers (median of 3) | $(printf "%.0f" "${tiny:-0}") cycles/s | | | ≥ 1,200/s |
| redirect of an existing key (wrk -t2 -c64) | ${redirect:-n/a} req/s | | | ≥ 70,000/s |

$(tinyline)

The master's CPU seconds and the request bytes it received, per phase:
2 GiB redirected $(mcpu put1g_redir) s, $(mbin put1g_redir) MiB; 2 GiB through it $(mcpu put1g_proxy) s, $(mbin put1g_proxy) MiB;
1600 × 1 MiB redirected $(mcpu put1m) s, $(mbin put1m) MiB; through it $(mcpu put1m_proxy) s, $(mbin put1m_proxy) MiB.

S3 (gateway on vol1, the same cluster and run):

| workload | S3 | native (same run) | S3 / native | goal |
| --- | --- | --- | --- | --- |
| PUT 1 GiB, aws s3 cp (multipart, $S3_CHUNK parts, 10 at a time) | ${awsup:-n/a} s, $(mb "$awsupmb") | $(mb "$put1g") | $(ratio "$awsupmb" "$put1g") | ≥ 80 % |
| GET 1 GiB, aws s3 cp (to a file) | ${awsdown:-n/a} s, $(mb "$awsdownmb") | $(mb "$get1g") | $(ratio "$awsdownmb" "$get1g") | ≥ 80 % |
| PUT 1 GiB, kvdb bench --s3 (one PutObject) | $(mb "$s3put1g") | $(mb "$put1g") | $(ratio "$s3put1g" "$put1g") | |
| GET 1 GiB, kvdb bench --s3 | $(mb "$s3get1g") | $(mb "$get1g") | $(ratio "$s3get1g" "$get1g") | |
| PutObject 1 MiB, concurrency 16, kvdb bench --s3 | $(printf "%.0f" "$s3put1mops") ops/s, $(mb "$s3put1m") | $(printf "%.0f" "$put1mops") ops/s | $(ratio "$s3put1mops" "$put1mops") | |

The master's CPU seconds during: bench --s3 2 GiB PUT $(awk '{printf "%.2f", $1 / 100}' "$OUT/s3put1g.mcpu"), 1600 x 1 MiB $(awk '{printf "%.2f", $1 / 100}' "$OUT/s3put1m.mcpu"), aws s3 cp 1 GiB up $( [ -f "$OUT/awsput.mcpu" ] && awk '{printf "%.2f", $1 / 100}' "$OUT/awsput.mcpu" || echo n/a).
aws cli peak RSS: ${awsrss_up:-n/a} MB up, ${awsrss_down:-n/a} MB down; its own CPU: ${awscpu_up:-n/a} s up, ${awscpu_down:-n/a} s down (of 2 cores × the seconds above).

Peak RSS (VmHWM) over the whole run: master $(hwm "$master") MB, volumes ${vh% } MB (vol1 serves S3).
Reports: $OUT/*.json
EOF
