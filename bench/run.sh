#!/usr/bin/env bash
# Meridian benchmark harness: direct backend vs nginx, HAProxy, Caddy and
# Meridian as reverse proxies, all on 127.0.0.1. See bench/README.md.
#
# Environment knobs:
#   BENCH_DURATION  measured time per run          (default 10s)
#   BENCH_WARMUP    warmup per run, not recorded   (default 2s)
#   BENCH_CONNS     connection counts              (default "64 256")
#   BENCH_TARGETS   targets to run                 (default "direct nginx haproxy caddy meridian")
#   BENCH_SIZE      backend body size in bytes     (default 1024)
#   BENCH_REPEAT    rounds over all (conns, target) pairs; the median-req/s run is reported (default 1)
#   BENCH_PIN       auto|1|0: pin loadgen to CPU 0 and servers to the others (default auto = on with >= 2 CPUs)
#   BENCH_INSTALL   1|0: apt-get install missing peers (default 1)
#   BENCH_KEEP_WORK 1: keep the temp work dir (logs, raw JSON) after the run
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
export PATH="$PATH:/usr/sbin:/sbin"

DURATION=${BENCH_DURATION:-10s}
WARMUP=${BENCH_WARMUP:-2s}
CONNS=${BENCH_CONNS:-"64 256"}
TARGETS=${BENCH_TARGETS:-"direct nginx haproxy caddy meridian"}
SIZE=${BENCH_SIZE:-1024}
REPEAT=${BENCH_REPEAT:-1}
PIN=${BENCH_PIN:-auto}
INSTALL=${BENCH_INSTALL:-1}
KEEP_WORK=${BENCH_KEEP_WORK:-0}

declare -A PORT=([direct]=18000 [nginx]=18001 [haproxy]=18002 [caddy]=18003 [meridian]=18004)
ADMIN_PORT=18009 # meridian admin listener

WORK=$(mktemp -d "${TMPDIR:-/tmp}/meridian-bench.XXXXXX")
BIN=$WORK/bin
mkdir -p "$BIN" "$WORK/logs" "$WORK/results"
RUNS_TSV=$WORK/runs.tsv
RSS_TSV=$WORK/rss.tsv
META_TSV=$WORK/meta.tsv
NOTES=$WORK/notes.txt
: >"$RUNS_TSV"
: >"$RSS_TSV"
: >"$META_TSV"
: >"$NOTES"

log() { printf '[bench] %s\n' "$*" >&2; }
note() {
	log "$*"
	printf '%s\n' "$*" >>"$NOTES"
}

# ---------------------------------------------------------------- processes
declare -A SPID=() # target -> pid of the process we started
STARTED=()         # every pid we started, in start order

# descendants PID: all (transitive) child pids of PID, from /proc.
descendants() {
	local parent=$1 f line pid
	local -a kids=() fields
	for f in /proc/[0-9]*/stat; do
		read -r line <"$f" 2>/dev/null || continue
		pid=${line%% *}
		# "pid (comm) state ppid ...": comm may contain spaces, so split
		# after the last ')'.
		read -ra fields <<<"${line##*) }"
		[[ ${fields[1]:-} == "$parent" ]] && kids+=("$pid")
	done
	local k
	for k in "${kids[@]}"; do
		echo "$k"
		descendants "$k"
	done
}

alive() { kill -0 "$1" 2>/dev/null; }

stop_pid() {
	local pid=$1 i
	alive "$pid" || return 0
	local -a tree
	mapfile -t tree < <(descendants "$pid")
	kill -TERM "$pid" 2>/dev/null || true
	for i in $(seq 1 30); do
		alive "$pid" || break
		sleep 0.1
	done
	alive "$pid" && kill -KILL "$pid" 2>/dev/null || true
	# Workers of nginx etc. normally exit with their master; make sure.
	local c
	for c in "${tree[@]}"; do
		alive "$c" && kill -KILL "$c" 2>/dev/null || true
	done
	wait "$pid" 2>/dev/null || true
}

cleanup() {
	local rc=$?
	trap - EXIT INT TERM
	local i
	for ((i = ${#STARTED[@]} - 1; i >= 0; i--)); do
		stop_pid "${STARTED[i]}"
	done
	if [[ $KEEP_WORK == 1 ]]; then
		log "work dir kept: $WORK"
	else
		rm -rf "$WORK"
	fi
	exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# ------------------------------------------------------------- peer install
stop_system_services() {
	local s
	for s in "$@"; do
		if [[ -d /run/systemd/system ]] && command -v systemctl >/dev/null; then
			systemctl stop "$s" >/dev/null 2>&1 || true
			systemctl disable "$s" >/dev/null 2>&1 || true
		elif command -v service >/dev/null; then
			service "$s" stop >/dev/null 2>&1 || true
		fi
	done
}

missing=()
for p in nginx haproxy caddy; do
	command -v "$p" >/dev/null || missing+=("$p")
done
if ((${#missing[@]})); then
	if [[ $INSTALL != 1 ]]; then
		note "peers missing and BENCH_INSTALL=0: ${missing[*]}"
	elif [[ $(id -u) != 0 ]] && ! command -v sudo >/dev/null; then
		note "peers missing (${missing[*]}) and not root: cannot install"
	else
		SUDO=()
		[[ $(id -u) != 0 ]] && SUDO=(sudo)
		log "installing missing peers: ${missing[*]}"
		if "${SUDO[@]}" apt-get update -qq &&
			DEBIAN_FRONTEND=noninteractive "${SUDO[@]}" apt-get install -y -qq "${missing[@]}" >"$WORK/logs/apt.log" 2>&1; then
			# Packages may start system services (ports 80, 2019, ...):
			# stop them; we run our own instances on 18000-18009.
			stop_system_services "${missing[@]}"
		else
			note "apt-get install ${missing[*]} failed (see log); continuing with what is available"
			tail -n 5 "$WORK/logs/apt.log" >&2 || true
		fi
	fi
fi

# ------------------------------------------------------------------- build
log "building backend, loadgen, benchreport"
go build -o "$BIN/backend" ./bench/cmd/backend
go build -o "$BIN/loadgen" ./bench/cmd/loadgen
go build -o "$BIN/benchreport" ./bench/cmd/benchreport

MERIDIAN_OK=0
declare -A FAIL=() # target -> reason it is not measured
if [[ " $TARGETS " == *" meridian "* ]]; then
	log "building meridian"
	if go build -o "$BIN/meridian" ./cmd/meridian >"$WORK/logs/meridian-build.log" 2>&1; then
		MERIDIAN_OK=1
	else
		FAIL[meridian]="build failed"
		note "MERIDIAN NOT MEASURED: 'go build ./cmd/meridian' failed: $(head -n 1 "$WORK/logs/meridian-build.log")"
	fi
fi

# ----------------------------------------------------------------- pinning
NCPU=$(nproc)
LG_PIN=()
SRV_PIN=()
if [[ $PIN == auto ]]; then
	if command -v taskset >/dev/null && ((NCPU >= 2)); then PIN=1; else PIN=0; fi
fi
SRV_CPUS=1
((NCPU > 2)) && SRV_CPUS="1-$((NCPU - 1))"
if [[ $PIN == 1 ]]; then
	LG_PIN=(taskset -c 0)
	SRV_PIN=(taskset -c "$SRV_CPUS")
	log "pinning: loadgen on CPU 0, backend and proxies on CPU $SRV_CPUS"
else
	log "pinning: off (all processes share all $NCPU CPUs)"
fi

ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

# ------------------------------------------------------------------- start
port_busy() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

for t in direct nginx haproxy caddy meridian; do
	if port_busy "${PORT[$t]}"; then
		log "port ${PORT[$t]} (for $t) is already in use by another process; stop it first"
		exit 1
	fi
done
if port_busy "$ADMIN_PORT"; then
	log "port $ADMIN_PORT (meridian admin) is already in use; stop it first"
	exit 1
fi

start() { # target cmd...
	local t=$1
	shift
	"${SRV_PIN[@]}" "$@" >"$WORK/logs/$t.log" 2>&1 &
	SPID[$t]=$!
	STARTED+=("$!")
}

wait_ready() { # target -> 0 when it answers 2xx
	local t=$1 i
	for i in $(seq 1 100); do
		if ! alive "${SPID[$t]}"; then
			FAIL[$t]="exited at start"
			note "$t exited during start-up: $(tail -n 3 "$WORK/logs/$t.log" | tr '\n' ' ')"
			return 1
		fi
		if "$BIN/loadgen" -probe -probe-timeout 500ms -url "http://127.0.0.1:${PORT[$t]}/" 2>/dev/null; then
			return 0
		fi
		sleep 0.1
	done
	FAIL[$t]="not answering"
	note "$t did not answer on 127.0.0.1:${PORT[$t]} within 10s: $(tail -n 3 "$WORK/logs/$t.log" | tr '\n' ' ')"
	stop_pid "${SPID[$t]}"
	return 1
}

want() { [[ " $TARGETS " == *" $1 "* ]]; }

start direct "$BIN/backend" -addr "127.0.0.1:${PORT[direct]}" -size "$SIZE"
if ! wait_ready direct; then
	log "backend failed to start; nothing to measure"
	exit 1
fi

if want nginx; then
	if command -v nginx >/dev/null; then
		mkdir -p "$WORK/nginx/tmp"
		start nginx nginx -p "$WORK/nginx/" -c "$ROOT/bench/peers/nginx.conf" -e "$WORK/nginx/error.log"
		wait_ready nginx || true
	else
		FAIL[nginx]="not installed"
		note "nginx not installed"
	fi
fi
if want haproxy; then
	if command -v haproxy >/dev/null; then
		start haproxy haproxy -db -f "$ROOT/bench/peers/haproxy.cfg"
		wait_ready haproxy || true
	else
		FAIL[haproxy]="not installed"
		note "haproxy not installed"
	fi
fi
if want caddy; then
	if command -v caddy >/dev/null; then
		mkdir -p "$WORK/caddy/data" "$WORK/caddy/config"
		start caddy env HOME="$WORK/caddy" XDG_DATA_HOME="$WORK/caddy/data" XDG_CONFIG_HOME="$WORK/caddy/config" \
			caddy run --config "$ROOT/bench/peers/Caddyfile" --adapter caddyfile
		wait_ready caddy || true
	else
		FAIL[caddy]="not installed"
		note "caddy not installed"
	fi
fi
if want meridian && ((MERIDIAN_OK)); then
	start meridian "$BIN/meridian" serve -config "$ROOT/bench/peers/meridian.yaml"
	if ! wait_ready meridian; then
		note "MERIDIAN NOT MEASURED: it did not start or answer (log: $(tail -n 2 "$WORK/logs/meridian.log" | tr '\n' ' '))"
	fi
fi

# ---------------------------------------------------------------- memory
# sum_status FIELD PID: sum of FIELD (kB) over PID and its descendants.
sum_status() {
	local field=$1 pid=$2 total=0 p v
	for p in "$pid" $(descendants "$pid"); do
		v=$(awk -v f="$field:" '$1 == f {print $2}' "/proc/$p/status" 2>/dev/null || true)
		total=$((total + ${v:-0}))
	done
	echo "$total"
}

sleep 1 # let everything settle after start-up before sampling idle RSS
declare -A IDLE=()
for t in direct nginx haproxy caddy meridian; do
	if [[ -n ${SPID[$t]:-} && -z ${FAIL[$t]:-} ]] && alive "${SPID[$t]}"; then
		IDLE[$t]=$(sum_status VmRSS "${SPID[$t]}")
		log "$t: pid ${SPID[$t]}, idle RSS $((IDLE[$t] / 1024)) MiB"
	fi
done

# -------------------------------------------------------------------- runs
for round in $(seq 1 "$REPEAT"); do
	for c in $CONNS; do
		for t in $TARGETS; do
			[[ -n ${PORT[$t]:-} ]] || {
				log "unknown target $t"
				continue
			}
			if [[ -n ${FAIL[$t]:-} ]]; then
				printf '%s\t%s\t-\t%s\n' "$t" "$c" "${FAIL[$t]}" >>"$RUNS_TSV"
				continue
			fi
			if ! alive "${SPID[$t]}"; then
				FAIL[$t]="died"
				note "$t died before the c=$c run"
				printf '%s\t%s\t-\t%s\n' "$t" "$c" "died" >>"$RUNS_TSV"
				continue
			fi
			out="$WORK/results/$t-c$c-r$round.json"
			log "run: $t c=$c ($WARMUP warmup + $DURATION), round $round/$REPEAT"
			if "${LG_PIN[@]}" "$BIN/loadgen" -url "http://127.0.0.1:${PORT[$t]}/" -c "$c" -d "$DURATION" -warmup "$WARMUP" -json \
				>"$out" 2>"$WORK/logs/loadgen-$t-c$c-r$round.log"; then
				printf '%s\t%s\t%s\n' "$t" "$c" "$out" >>"$RUNS_TSV"
				log "     $(tr -d '\n ' <"$out" | sed -n 's/.*"rps":\([0-9.]*\).*"p99":\([0-9]*\).*/\1 req\/s, p99 \2 ns/p')"
			else
				printf '%s\t%s\t-\t%s\n' "$t" "$c" "loadgen failed" >>"$RUNS_TSV"
				note "$t c=$c: loadgen failed: $(tail -n 2 "$WORK/logs/loadgen-$t-c$c-r$round.log" | tr '\n' ' ')"
			fi
			sleep 1
		done
	done
done

for t in direct nginx haproxy caddy meridian; do
	if [[ -n ${IDLE[$t]:-} ]]; then
		peak="-"
		alive "${SPID[$t]}" && peak=$(sum_status VmHWM "${SPID[$t]}")
		printf '%s\t%s\t%s\n' "$t" "${IDLE[$t]}" "$peak" >>"$RSS_TSV"
	fi
done

# ------------------------------------------------------------------ report
{
	printf 'date\t%s\n' "$(date -u +%Y-%m-%dT%H:%M:%SZ)"
	printf 'kernel\t%s\n' "$(uname -r)"
	printf 'cpus\t%s\n' "$NCPU"
	printf 'cpu_model\t%s\n' "$(awk -F': ' '/model name/ {print $2; exit}' /proc/cpuinfo)"
	printf 'pinning\t%s\n' "$([[ $PIN == 1 ]] && echo "loadgen CPU 0, servers CPU $SRV_CPUS" || echo off)"
	printf 'duration\t%s\n' "$DURATION"
	printf 'warmup\t%s\n' "$WARMUP"
	printf 'repeat\t%s\n' "$REPEAT"
	printf 'body_bytes\t%s\n' "$SIZE"
	printf 'go\t%s\n' "$(go version)"
	printf 'commit\t%s\n' "$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)"
	command -v nginx >/dev/null && printf 'nginx\t%s\n' "$(nginx -v 2>&1 | head -n 1)"
	command -v haproxy >/dev/null && printf 'haproxy\t%s\n' "$(haproxy -v 2>&1 | head -n 1)"
	command -v caddy >/dev/null && printf 'caddy\t%s\n' "$(caddy version 2>&1 | head -n 1)"
	true
} >"$META_TSV"

mkdir -p "$ROOT/bench/results"
echo
"$BIN/benchreport" -runs "$RUNS_TSV" -rss "$RSS_TSV" -meta "$META_TSV" -notes "$NOTES" \
	-out "$ROOT/bench/results/latest.json" | tee "$ROOT/bench/results/latest.md"
echo
log "results: bench/results/latest.json, bench/results/latest.md"
