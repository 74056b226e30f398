#!/usr/bin/env bash
# soak.sh runs a long verified mixed load against a master and three volumes
# started as separate processes on this machine (replicas 2, gossip profile
# local, repair after 30 s), SIGKILLs a volume and restarts it (same
# directory, name and ports) twice during the run, and watches each process
# for leaks:
#
#   kvdb bench --size 1KiB-16MiB --ops $OPS --verify
#              --concurrency 8 --duration $DURATION --retries 3 --json
#
# OPS defaults to mixed:70get/15put/15delete: as many deletes as puts, so the
# data stays bounded (with more puts than deletes, 10 minutes at a few
# hundred MB/s fill a 100 GB disk).
#
#   at 20 % of DURATION  SIGKILL vol2, restart it DOWN seconds later
#   at 60 % of DURATION  SIGKILL vol3, restart it DOWN seconds later
#   every SAMPLE seconds  goroutines (go_goroutines from /_kvdb/metrics),
#                         open file descriptors (/proc/PID/fd) and RSS
#                         (VmRSS) of the master and each volume
#
# GETs and HEADs are retried (--retries 3: 100 ms, 300 ms, 900 ms apart) so
# that a read cut by the kill, or redirected to the dead volume in the half
# second before the master notices, is counted as "retried", not failed.
# PUTs and DELETEs are never retried by bench: any failed write is a
# failure. At the end it prints the bench report, the samples, and each
# node's first and last sample, so growth is visible. Exit status: 0 when
# no operation failed (after retries) and every node is alive; 1 otherwise.
#
# Needs: Linux (/proc), bash 4, a built ./kvdb (make build), curl, jq.
# Environment:
#   KVDB      kvdb binary (default ./kvdb)
#   DIR       data and logs, emptied first (default ./data/soak)
#   PORT      base port; uses PORT..PORT+3 and PORT+1000..PORT+1003 (default 3900)
#   DURATION  the bench run: 10m, 90s, 1h30m or plain seconds (default 10m)
#   DOWN      seconds a killed volume stays down (default 30; at most 35 %
#             of DURATION, so the two outages never overlap)
#   SAMPLE    seconds between samples (default 30)
set -euo pipefail

KVDB=${KVDB:-./kvdb}
DIR=${DIR:-./data/soak}
PORT=${PORT:-3900}
DURATION=${DURATION:-10m}
DOWN=${DOWN:-30}
SAMPLE=${SAMPLE:-30}
URL=http://127.0.0.1:$PORT

for tool in curl jq; do
	command -v "$tool" >/dev/null || { echo "soak.sh: needs $tool" >&2; exit 1; }
done
[[ -x $KVDB ]] || { echo "soak.sh: no kvdb binary at $KVDB (make build, or set KVDB)" >&2; exit 1; }

# seconds DURATION: Go-style durations of whole h, m and s units, or seconds.
seconds() {
	local s=$1 total=0 re='^([0-9]+)([hms])(.*)$'
	if [[ $s =~ ^[0-9]+$ ]]; then
		echo "$s"
		return
	fi
	[[ -n $s ]] || return 1
	while [[ -n $s ]]; do
		[[ $s =~ $re ]] || return 1
		case ${BASH_REMATCH[2]} in
		h) total=$((total + 3600 * 10#${BASH_REMATCH[1]})) ;;
		m) total=$((total + 60 * 10#${BASH_REMATCH[1]})) ;;
		s) total=$((total + 10#${BASH_REMATCH[1]})) ;;
		esac
		s=${BASH_REMATCH[3]}
	done
	echo "$total"
}
D=$(seconds "$DURATION") || { echo "soak.sh: DURATION=$DURATION: want e.g. 10m, 90s, 1h30m" >&2; exit 1; }
((D >= 10)) || { echo "soak.sh: DURATION=$DURATION: want at least 10s" >&2; exit 1; }
DOWN=$((DOWN < D * 35 / 100 ? DOWN : D * 35 / 100))

# The outages: volume, when it is killed, when it is restarted (seconds
# from the start of the bench).
kill_vol=(vol2 vol3)
kill_at=($((D * 20 / 100)) $((D * 60 / 100)))
restart_at=($((kill_at[0] + DOWN)) $((kill_at[1] + DOWN)))

declare -A pid port cmd restarted
nodes=(master vol1 vol2 vol3)
bench_pid=""

cleanup() {
	local p
	[[ -n $bench_pid ]] && kill "$bench_pid" 2>/dev/null || true
	for n in "${nodes[@]}"; do
		p=${pid[$n]:-}
		[[ -n $p ]] && kill "$p" 2>/dev/null || true
	done
	wait 2>/dev/null || true
}
trap cleanup EXIT

rm -rf "$DIR"
mkdir -p "$DIR"
OUT=$DIR/results
mkdir -p "$OUT"
common=(--cluster "soak-$PORT" --gossip-profile local --log-level warn)
port[master]=$PORT
cmd[master]="master --addr 127.0.0.1:$PORT --gossip 127.0.0.1:$((PORT + 1000)) --replicas 2 --repair-delay 30s"
for i in 1 2 3; do
	port[vol$i]=$((PORT + i))
	cmd[vol$i]="volume --addr 127.0.0.1:$((PORT + i)) --gossip 127.0.0.1:$((PORT + 1000 + i)) --join 127.0.0.1:$((PORT + 1000)) --name vol$i"
done

# start NODE: runs it in the background, appending to DIR/NODE.log.
start() {
	local n=$1
	# shellcheck disable=SC2086 # cmd holds words
	"$KVDB" ${cmd[$n]} "${common[@]}" "$DIR/$n" 2>>"$DIR/$n.log" &
	pid[$n]=$!
}

# live_volumes: volumes the master's gossip sees alive.
live_volumes() {
	curl -fs --max-time 2 "$URL/_kvdb/cluster" |
		jq '[.members[] | select(.role == "volume" and .state == "alive")] | length' 2>/dev/null || echo 0
}

# alive NAME: whether the master's gossip sees volume NAME alive.
alive() {
	curl -fs --max-time 2 "$URL/_kvdb/cluster" |
		jq -e --arg n "$1" 'any(.members[]; .name == $n and .state == "alive")' >/dev/null 2>&1
}

t0=$(date +%s)
now() { echo $(($(date +%s) - t0)); }
event() { printf '%5ss  %s\n' "$(now)" "$*" | tee -a "$OUT/events.txt" >&2; }

for n in "${nodes[@]}"; do start "$n"; done
for _ in $(seq 150); do
	[[ $(live_volumes) == 3 ]] && curl -fs --max-time 2 "$URL/_kvdb/ready" >/dev/null && break
	sleep 0.2
done
[[ $(live_volumes) == 3 ]] || { echo "soak.sh: the master does not see 3 volumes; logs in $DIR" >&2; exit 1; }

# sample LABEL: one line per node in samples.tsv: label, node, goroutines,
# fds, RSS in MiB ("-" for what cannot be read, e.g. while a node is down).
: >"$OUT/samples.tsv"
sample() {
	local label=$1 n p g f r
	for n in "${nodes[@]}"; do
		p=${pid[$n]:-}
		g=- f=- r=-
		if [[ -n $p && -d /proc/$p ]]; then
			g=$(curl -fs --max-time 2 "http://127.0.0.1:${port[$n]}/_kvdb/metrics" |
				awk '$1 == "go_goroutines" {print $2; exit}') || true
			f=$(ls "/proc/$p/fd" 2>/dev/null | wc -l) || true
			r=$(awk '/^VmRSS:/ {printf "%.1f", $2 / 1024}' "/proc/$p/status" 2>/dev/null) || true
		fi
		printf '%s\t%s\t%s\t%s\t%s\n' "$label" "$n" "${g:--}" "${f:--}" "${r:--}" >>"$OUT/samples.tsv"
	done
}

echo "soak: DURATION=$DURATION (${D}s), SIGKILL ${kill_vol[0]} at ${kill_at[0]}s and ${kill_vol[1]} at ${kill_at[1]}s, each restarted ${DOWN}s later; sample every ${SAMPLE}s; data and logs in $DIR" >&2
sample "start"
t0=$(date +%s)
"$KVDB" bench --url "$URL" --size 1KiB-16MiB --ops "${OPS:-mixed:70get/15put/15delete}" --verify \
	--concurrency 8 --duration "${D}s" --retries 3 --json >"$OUT/bench.json" 2>"$OUT/bench.err" &
bench_pid=$!
event "bench started (pid $bench_pid)"

next_sample=$SAMPLE
k=0 # next outage
down="" # the volume down now, if any
waiting_rejoin=""
while kill -0 "$bench_pid" 2>/dev/null; do
	t=$(now)
	if [[ -z $down && $k -lt ${#kill_vol[@]} && $t -ge ${kill_at[$k]} ]]; then
		down=${kill_vol[$k]}
		event "SIGKILL $down (pid ${pid[$down]})"
		kill -KILL "${pid[$down]}"
		wait "${pid[$down]}" 2>/dev/null || true
	elif [[ -n $down && $t -ge ${restart_at[$k]} ]]; then
		start "$down"
		restarted[$down]=${restarted[$down]:-}${restarted[$down]:+,}$(now)s
		event "restart $down (pid ${pid[$down]}), same dir, name and ports"
		waiting_rejoin=$down
		down=""
		k=$((k + 1))
	fi
	if [[ -n $waiting_rejoin ]] && alive "$waiting_rejoin"; then
		event "$waiting_rejoin rejoined: the master sees it alive ($(live_volumes) live volumes)"
		waiting_rejoin=""
	fi
	if ((t >= next_sample)); then
		sample "${next_sample}s"
		next_sample=$((next_sample + SAMPLE))
	fi
	sleep 1
done
bench_status=0
wait "$bench_pid" || bench_status=$?
bench_pid=""
event "bench finished (exit status $bench_status)"
if [[ -n $down ]]; then # the run ended before the restart was due
	start "$down"
	restarted[$down]=${restarted[$down]:-}${restarted[$down]:+,}$(now)s
	event "restart $down (pid ${pid[$down]}) after the run"
fi
sample "end"
sleep 5
sample "end+5s"

# ---- report ----
fail=0
if ! jq -e '.ops' "$OUT/bench.json" >/dev/null 2>&1; then
	echo "soak.sh: bench wrote no report (exit status $bench_status):" >&2
	cat "$OUT/bench.err" >&2
	exit 1
fi

echo
echo "== bench: $(jq -r '.config | "\(.size), \(.ops), concurrency \(.concurrency), \(.duration), verify \(.verify), retries \(.retries // 0)"' "$OUT/bench.json"), elapsed $(jq -r '.elapsed_ns / 1e9 | floor' "$OUT/bench.json")s"
{
	printf 'op\tcount\tops/s\tMB/s\tp99\terrors\tretried\tfirst error\n'
	jq -r '.ops[] | [.op, .count, (.ops_per_sec * 10 | round / 10), (.mb_per_sec * 10 | round / 10),
		(if .p99_ns > 0 then "\(.p99_ns / 1e6 | round)ms" else "-" end), .errors, .retried,
		(if .first_error then .first_error elif .first_retry_error then "retry: " + .first_retry_error else "" end)
		| tostring | .[0:150]] | @tsv' "$OUT/bench.json"
} | awk -F'\t' '{printf "%-17s %7s %8s %7s %8s %6s %7s  %s\n", $1, $2, $3, $4, $5, $6, $7, $8}'

errors=$(jq '[.ops[].errors] | add // 0' "$OUT/bench.json")
get_errors=$(jq '[.ops[] | select(.op == "get" or .op == "head") | .errors] | add // 0' "$OUT/bench.json")
echo
echo "Verify mismatches are counted in errors (a wrong, short or long body fails the GET and is never retried)."
if ((get_errors == 0)); then
	echo "verify mismatches: 0 (no GET failed)"
elif jq -e '.ops[] | select(.op == "get") | .first_error // "" | contains("verify:")' "$OUT/bench.json" >/dev/null; then
	echo "verify mismatches: at least 1 of the $get_errors failed GETs (the first failure was one; the JSON keeps only the first error's text)"
else
	echo "verify mismatches: unknown among the $get_errors failed GETs (the first failure was not one; the JSON keeps only the first error's text)"
fi
if ((errors > 0)); then
	echo "FAIL: $errors operations failed after retries"
	fail=1
fi
if ((bench_status != 0)); then
	echo "FAIL: bench exit status $bench_status: $(tail -n 3 "$OUT/bench.err")"
	fail=1
fi

echo
echo "== events (seconds from the start of the bench)"
cat "$OUT/events.txt"
echo
echo "== master after the run: $(curl -fs --max-time 2 "$URL/_kvdb/cluster" |
	jq -r '"\([.members[] | select(.role == "volume" and .state == "alive")] | length) live volumes, under_replicated \(.under_replicated // "-"), repair_copies \(.repair_copies // "-")"' 2>/dev/null || echo "not answering")"

echo
echo "== node logs during the run (DIR/NODE.log, --log-level warn)"
for n in "${nodes[@]}"; do
	printf '%-7s %4d WARN, %4d ERROR lines\n' "$n" "$(grep -c 'level=WARN' "$DIR/$n.log" || true)" \
		"$(grep -c 'level=ERROR' "$DIR/$n.log" || true)"
done

echo
echo "== samples: goroutines / open fds / RSS MiB per node (- while a node is down)"
awk -F'\t' -v nodes="${nodes[*]}" '
	BEGIN { n = split(nodes, names, " ") }
	{
		if (!($1 in seen)) { seen[$1] = 1; order[++rows] = $1 }
		cell[$1, $2] = $3 " / " $4 " / " $5
	}
	END {
		printf "%-8s", "time"
		for (i = 1; i <= n; i++) printf "  %-20s", names[i]
		printf "\n"
		for (r = 1; r <= rows; r++) {
			printf "%-8s", order[r]
			for (i = 1; i <= n; i++) printf "  %-20s", cell[order[r], names[i]]
			printf "\n"
		}
	}' "$OUT/samples.tsv"

echo
echo "== first vs last sample (before the bench vs 5 s after it ended)"
printf '%-7s %-18s %-18s %-22s  %s\n' node goroutines fds "RSS MiB" note
delta() { awk -v a="$1" -v b="$2" 'BEGIN { if (a == "-" || b == "-") print "?"; else printf "%+g", b - a }'; }
for n in "${nodes[@]}"; do
	first=$(awk -F'\t' -v n="$n" '$2 == n {print $3, $4, $5; exit}' "$OUT/samples.tsv")
	last=$(awk -F'\t' -v n="$n" '$2 == n {l = $3 " " $4 " " $5} END {print l}' "$OUT/samples.tsv")
	read -r g0 f0 r0 <<<"$first"
	read -r g1 f1 r1 <<<"$last"
	note=""
	[[ -n ${restarted[$n]:-} ]] && note="restarted at ${restarted[$n]}: last is a new process"
	if [[ -z ${pid[$n]:-} || ! -d /proc/${pid[$n]} ]]; then
		note="NOT RUNNING at the end"
		fail=1
	fi
	printf '%-7s %-18s %-18s %-22s  %s\n' "$n" "$g0 -> $g1 ($(delta "$g0" "$g1"))" "$f0 -> $f1 ($(delta "$f0" "$f1"))" \
		"$r0 -> $r1 ($(delta "$r0" "$r1"))" "$note"
done

echo
echo "Reports and logs: $OUT/bench.json, $OUT/samples.tsv, $DIR/*.log"
if ((fail)); then
	echo "soak: FAIL"
	exit 1
fi
echo "soak: PASS"
