#!/usr/bin/env bash
# A/B runs: two builds of Meridian, and nginx for reference, measured in
# interleaved rounds on loopback. Each round runs every arm back to back at
# each connection count, in an order that rotates from round to round, so
# that the VM's drift (often more than the change being measured) hits every
# arm alike; bench/cmd/abreport then gives the medians of the per-round
# ratios with a bootstrap interval. See bench/README.md ("A/B runs").
#
# Usage: bash bench/ab.sh [BASE_REF]
#   arm A: BASE_REF (default HEAD), built from that commit's tree
#   arm B: the working tree as it is, uncommitted changes included
#   arm N: nginx (bench/peers/nginx.conf), when installed
#
# Environment knobs:
#   AB_ROUNDS    rounds                                  (default 8)
#   AB_CONNS     connection counts                       (default "64 256")
#   AB_DURATION  measured time per run                   (default 5s)
#   AB_WARMUP    warmup per run, not recorded, in whole seconds ("2s") (default 1s)
#   AB_PATH      request path: /bare/ is the route with no proxy headers,
#                the work bare nginx does; / adds Meridian's defaults (default /bare/)
#   AB_NGINX     auto|0: include nginx (installed from Debian's packages
#                when missing, unless BENCH_INSTALL=0)    (default auto)
#   AB_RESTART   1: start every arm afresh for each round, so that what a
#                process happened to get at its start (memory layout, which
#                connections share a cache set) varies from round to round
#                instead of favouring one arm all run long; 0: start once (default 1)
#   AB_PIN       auto|1|0: loadgen on CPU 0, servers on the others (default auto)
#   AB_KEEP_WORK 1: keep the work dir (loadgen JSON, logs)
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
export PATH="$PATH:/usr/sbin:/sbin"

BASE=${1:-HEAD}
ROUNDS=${AB_ROUNDS:-8}
CONNS=${AB_CONNS:-"64 256"}
DURATION=${AB_DURATION:-5s}
WARMUP=${AB_WARMUP:-1s}
REQPATH=${AB_PATH:-/bare/}
NGINX=${AB_NGINX:-auto}
PIN=${AB_PIN:-auto}
KEEP_WORK=${AB_KEEP_WORK:-0}
RESTART=${AB_RESTART:-1}

log() { printf '[ab] %s\n' "$*" >&2; }
# shellcheck source=bench/lib.sh
source "$ROOT/bench/lib.sh"

[[ $ROUNDS =~ ^[1-9][0-9]*$ ]] || { log "AB_ROUNDS must be a positive integer"; exit 2; }
[[ $REQPATH == /* ]] || { log "AB_PATH must begin with /"; exit 2; }
BASE_COMMIT=$(git rev-parse --verify --quiet "$BASE^{commit}") || { log "not a commit: $BASE"; exit 2; }

# Ports: the backend and nginx as in bench/run.sh (nginx.conf names them),
# the two Meridians on their own.
BACKEND_PORT=18000
declare -A PORT=([A]=18004 [B]=18024 [N]=18001)
declare -A ADMIN=([A]=18009 [B]=18029)
for p in "$BACKEND_PORT" "${PORT[@]}" "${ADMIN[@]}"; do
	if port_busy "$p"; then
		log "port $p is already in use; stop what listens there (bench/run.sh uses 18000-18019)"
		exit 1
	fi
done

WORK=$(mktemp -d "${TMPDIR:-/tmp}/meridian-ab.XXXXXX")
mkdir -p "$WORK/bin" "$WORK/logs" "$WORK/results"
STARTED=()
cleanup() {
	local rc=$? i
	trap - EXIT INT TERM
	for ((i = ${#STARTED[@]} - 1; i >= 0; i--)); do
		stop_pid "${STARTED[i]}"
	done
	if [[ $KEEP_WORK == 1 ]]; then log "work dir kept: $WORK"; else rm -rf "$WORK"; fi
	exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

log "building A ($BASE, ${BASE_COMMIT:0:7}) from its tree, B from the working tree"
mkdir -p "$WORK/a-src"
git archive "$BASE_COMMIT" | tar -x -C "$WORK/a-src"
(cd "$WORK/a-src" && go build -o "$WORK/bin/meridian-a" ./cmd/meridian)
go build -o "$WORK/bin/meridian-b" ./cmd/meridian
go build -o "$WORK/bin/backend" ./bench/cmd/backend
go build -o "$WORK/bin/loadgen" ./bench/cmd/loadgen
go build -o "$WORK/bin/abreport" ./bench/cmd/abreport
B_DESC="working tree at $(git rev-parse --short HEAD)"
[[ -n $(git status --porcelain --untracked-files=no) ]] && B_DESC+=" + uncommitted changes"

LG_PIN=()
SRV_PIN=()
if [[ $PIN == auto ]]; then
	if command -v taskset >/dev/null && (($(nproc) >= 2)); then PIN=1; else PIN=0; fi
fi
if [[ $PIN == 1 ]]; then
	LG_PIN=(taskset -c 0)
	SRV_PIN=(taskset -c "1-$(($(nproc) - 1))")
fi
ulimit -n 65536 2>/dev/null || true

declare -A SPID=()
ready() { # arm url: wait until it answers 2xx
	local i
	for i in $(seq 1 100); do
		alive "${SPID[$1]}" || { log "$1 exited: $(tail -n 3 "$WORK/logs/$1.log" | tr '\n' ' ')"; return 1; }
		"$WORK/bin/loadgen" -probe -probe-timeout 500ms -url "$2" 2>/dev/null && return 0
		sleep 0.1
	done
	log "$1 did not answer on $2"
	return 1
}

start backend "$WORK/bin/backend" -addr "127.0.0.1:$BACKEND_PORT" -size 1024
ready backend "http://127.0.0.1:$BACKEND_PORT/"
for arm in A B; do
	lower=${arm,,}
	mkdir -p "$WORK/$lower-data"
	sed -e "s/127.0.0.1:18004/127.0.0.1:${PORT[$arm]}/; s/127.0.0.1:18009/127.0.0.1:${ADMIN[$arm]}/" \
		-e "s|^  name: bench$|  name: bench-$lower\n  data_dir: $WORK/$lower-data|" \
		bench/peers/meridian.yaml >"$WORK/$lower.yaml"
done
WANT_N=0
if [[ $NGINX != 0 ]]; then
	install_peers "${BENCH_INSTALL:-1}" "$WORK/logs/apt.log" nginx
fi
if [[ $NGINX != 0 ]] && command -v nginx >/dev/null; then
	WANT_N=1
	mkdir -p "$WORK/nginx/tmp"
elif [[ $NGINX != 0 ]]; then
	log "nginx is not installed and could not be: A and B only"
fi

# start_arms starts A, B and (when wanted) nginx, and sets ARMS to those
# that answer; stop_arms stops them.
start_arms() {
	local arm lower
	ARMS=()
	for arm in A B; do
		lower=${arm,,}
		start "$arm" "$WORK/bin/meridian-$lower" serve -config "$WORK/$lower.yaml"
		ready "$arm" "http://127.0.0.1:${PORT[$arm]}$REQPATH" && ARMS+=("$arm")
	done
	if ((WANT_N)); then
		start N nginx -p "$WORK/nginx/" -c "$ROOT/bench/peers/nginx.conf" -e "$WORK/nginx/error.log"
		ready N "http://127.0.0.1:${PORT[N]}/" && ARMS+=(N)
	fi
	[[ " ${ARMS[*]} " == *" A "* && " ${ARMS[*]} " == *" B "* ]] || { log "A or B did not start"; exit 1; }
}
stop_arms() {
	local arm pid keep=()
	for arm in A B N; do
		[[ -n ${SPID[$arm]:-} ]] || continue
		stop_pid "${SPID[$arm]}"
		for pid in "${STARTED[@]}"; do
			[[ $pid == "${SPID[$arm]}" ]] || keep+=("$pid")
		done
		STARTED=("${keep[@]}")
		keep=()
		unset "SPID[$arm]"
	done
}

url() { # arm
	if [[ $1 == N ]]; then echo "http://127.0.0.1:${PORT[N]}/"; else echo "http://127.0.0.1:${PORT[$1]}$REQPATH"; fi
}

RUNS=$WORK/runs.tsv
printf '# round\tconns\tarm\tloadgen_json\tuser_us\tsystem_us\n' >"$RUNS"
start_arms
log "${ROUNDS} rounds x conns ($CONNS) x arms (${ARMS[*]}), $WARMUP + $DURATION each$( ((RESTART)) && echo ", restarted each round")"
for round in $(seq 1 "$ROUNDS"); do
	if ((RESTART && round > 1)); then
		stop_arms
		start_arms
	fi
	n=${#ARMS[@]}
	for c in $CONNS; do
		for ((k = 0; k < n; k++)); do
			arm=${ARMS[$(((k + round - 1) % n))]}
			out=$WORK/results/r$round-c$c-$arm.json
			mark=$WORK/cpu-mark
			# CPU over the measured part only: read after the warmup.
			(
				sleep "$WARMUP"
				cpu_times "${SPID[$arm]}" >"$mark"
			) &
			marker=$!
			if "${LG_PIN[@]}" "$WORK/bin/loadgen" -url "$(url "$arm")" -c "$c" -d "$DURATION" -warmup "$WARMUP" \
				-json >"$out" 2>"$WORK/logs/loadgen-r$round-c$c-$arm.log"; then
				read -r u1 s1 < <(cpu_times "${SPID[$arm]}")
				wait "$marker"
				read -r u0 s0 <"$mark"
				printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$round" "$c" "$arm" "$out" "$((u1 - u0))" "$((s1 - s0))" >>"$RUNS"
			else
				wait "$marker" || true
				log "round $round, $c conns, $arm: loadgen failed: $(tail -n 1 "$WORK/logs/loadgen-r$round-c$c-$arm.log")"
			fi
		done
	done
	log "round $round/$ROUNDS done"
done

"$WORK/bin/abreport" -runs "$RUNS" -a "$BASE (${BASE_COMMIT:0:7})" -b "$B_DESC" -path "$REQPATH"
