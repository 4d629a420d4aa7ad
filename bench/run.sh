#!/usr/bin/env bash
# Meridian benchmark harness: direct backend vs nginx, HAProxy, Caddy and
# Meridian as reverse proxies, all on 127.0.0.1. See bench/README.md.
#
# Environment knobs:
#   BENCH_DURATION  measured time per run          (default 10s)
#   BENCH_WARMUP    warmup per run, not recorded   (default 2s)
#   BENCH_CONNS     connection counts              (default "64 256")
#   BENCH_TARGETS   targets for proto h1           (default "direct nginx nginx-gw haproxy caddy go-floor meridian meridian-bare";
#                   go-evfloor on request)
#   BENCH_PROTOS    protocols: h1 tls h2 h3 handshakes handshakes-h3, or "all" (= h1 tls h2 h3 handshakes) (default h1)
#   BENCH_TLS_TARGETS targets for the TLS protos   (default "direct-tls caddy-tls meridian-tls")
#   BENCH_SYSCTL    1: as root, raise net.core.rmem_max/wmem_max to 7500000 for QUIC (default 0: only report them)
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
TARGETS=${BENCH_TARGETS:-"direct nginx nginx-gw haproxy caddy go-floor meridian meridian-bare"}
PROTOS=${BENCH_PROTOS:-h1}
[[ $PROTOS == all ]] && PROTOS="h1 tls h2 h3 handshakes"
TLS_TARGETS=${BENCH_TLS_TARGETS:-"direct-tls caddy-tls meridian-tls"}
SYSCTL=${BENCH_SYSCTL:-0}
SIZE=${BENCH_SIZE:-1024}
REPEAT=${BENCH_REPEAT:-1}
PIN=${BENCH_PIN:-auto}
INSTALL=${BENCH_INSTALL:-1}
KEEP_WORK=${BENCH_KEEP_WORK:-0}

declare -A PORT=([direct]=18000 [nginx]=18001 [haproxy]=18002 [caddy]=18003 [meridian]=18004 [go-floor]=18005 [nginx-gw]=18006
	[go-evfloor]=18007
	[meridian-bare]=18004
	[direct-tls]=18010 [caddy-tls]=18013 [meridian-tls]=18015)
ADMIN_PORT=18009 # meridian admin listener
# meridian-tls: 18014 plain HTTP (redirects), 18015 HTTPS (TCP + UDP), 18019 admin.
# caddy-tls: 18013 HTTPS (TCP + UDP); its http_port 18012 is not bound (no redirects).
ALL_TARGETS=(direct nginx nginx-gw haproxy caddy go-floor go-evfloor meridian meridian-bare direct-tls caddy-tls meridian-tls)
# Targets served by another target's process (nginx-gw is a second server
# block of the nginx peer, meridian-bare a second route of meridian's):
# never stopped on their own.
declare -A SHARES=([direct-tls]=direct [nginx-gw]=nginx [meridian-bare]=meridian)

# loadgen flags of each protocol (all TLS protos use the TLS targets).
declare -A PROTO_ARGS=([h1]="" [tls]="-tls" [h2]="-h2" [h3]="-h3" [handshakes]="-tls -handshakes" [handshakes-h3]="-h3 -handshakes")
for p in $PROTOS; do
	if [[ -z ${PROTO_ARGS[$p]+x} ]]; then
		printf '[bench] unknown protocol %s in BENCH_PROTOS (known: %s, all)\n' "$p" "${!PROTO_ARGS[*]}" >&2
		exit 2
	fi
done
targets_for() { # proto -> its targets
	if [[ $1 == h1 ]]; then echo "$TARGETS"; else echo "$TLS_TARGETS"; fi
}
WANTED=" "
for p in $PROTOS; do WANTED+="$(targets_for "$p") "; done
WANT_TLS=0
[[ " $PROTOS " =~ \ (tls|h2|h3|handshakes|handshakes-h3)\  ]] && WANT_TLS=1

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

# descendants, alive, stop_pid, start, port_busy, cpu_times
# shellcheck source=bench/lib.sh
source "$ROOT/bench/lib.sh"

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
install_peers "$INSTALL" "$WORK/logs/apt.log" nginx haproxy caddy

# ------------------------------------------------------------------- build
log "building backend, loadgen, benchreport"
go build -o "$BIN/backend" ./bench/cmd/backend
go build -o "$BIN/loadgen" ./bench/cmd/loadgen
go build -o "$BIN/benchreport" ./bench/cmd/benchreport
go build -o "$BIN/floorproxy" ./bench/cmd/floorproxy
go build -o "$BIN/evfloor" ./bench/cmd/evfloor

MERIDIAN_OK=0
declare -A FAIL=() # target -> reason it is not measured
if [[ $WANTED == *" meridian "* || $WANTED == *" meridian-bare "* || $WANTED == *" meridian-tls "* ]]; then
	log "building meridian"
	if go build -o "$BIN/meridian" ./cmd/meridian >"$WORK/logs/meridian-build.log" 2>&1; then
		MERIDIAN_OK=1
	else
		FAIL[meridian]="build failed"
		FAIL[meridian-bare]="build failed"
		FAIL[meridian-tls]="build failed"
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

# udp_busy PORT: something is bound to 127.0.0.1:PORT or *:PORT over UDP
# (needs ss; without it UDP ports are not checked).
udp_busy() {
	command -v ss >/dev/null || return 1
	[[ -n $(ss -Hunl "sport = :$1" 2>/dev/null) ]]
}

for t in direct nginx nginx-gw haproxy caddy go-floor go-evfloor meridian; do
	if port_busy "${PORT[$t]}"; then
		log "port ${PORT[$t]} (for $t) is already in use by another process; stop it first"
		exit 1
	fi
done
if port_busy "$ADMIN_PORT"; then
	log "port $ADMIN_PORT (meridian admin) is already in use; stop it first"
	exit 1
fi
if ((WANT_TLS)); then
	for p in 18010 18012 18013 18014 18015 18019; do
		if port_busy "$p" || udp_busy "$p"; then
			log "port $p (TLS targets) is already in use by another process; stop it first"
			exit 1
		fi
	done
fi

# ------------------------------------------------------- UDP buffers (QUIC)
RMEM=$(cat /proc/sys/net/core/rmem_max 2>/dev/null || echo "?")
WMEM=$(cat /proc/sys/net/core/wmem_max 2>/dev/null || echo "?")
if [[ " $PROTOS " == *" h3 "* || " $PROTOS " == *" handshakes-h3 "* ]]; then
	if [[ $SYSCTL == 1 && $(id -u) == 0 && $RMEM =~ ^[0-9]+$ && $WMEM =~ ^[0-9]+$ ]] &&
		((RMEM < 7500000 || WMEM < 7500000)); then
		if sysctl -q -w net.core.rmem_max=$((RMEM > 7500000 ? RMEM : 7500000)) net.core.wmem_max=$((WMEM > 7500000 ? WMEM : 7500000)); then
			note "BENCH_SYSCTL=1: raised net.core.rmem_max $RMEM -> $(cat /proc/sys/net/core/rmem_max), wmem_max $WMEM -> $(cat /proc/sys/net/core/wmem_max) (system-wide, until reboot)"
			RMEM=$(cat /proc/sys/net/core/rmem_max)
			WMEM=$(cat /proc/sys/net/core/wmem_max)
		fi
	elif [[ $RMEM =~ ^[0-9]+$ ]] && ((RMEM < 7500000)) && [[ $(id -u) != 0 ]]; then
		note "net.core.rmem_max=$RMEM < 7500000 and not root: quic-go (loadgen, caddy, meridian, backend) cannot get its 7 MB UDP buffers and logs a warning; see README"
	fi
fi

declare -A CA=()      # TLS target -> CA file for loadgen -cacert
declare -A TLSFLAG=() # TLS target -> "-cacert FILE" or "-insecure"
declare -A GETCA=()   # TLS target -> command printing its CA root (retried until it works)

url_of() { # target
	case $1 in
	*-tls) echo "https://127.0.0.1:${PORT[$1]}/" ;;
	meridian-bare) echo "http://127.0.0.1:${PORT[$1]}/bare/" ;;
	*) echo "http://127.0.0.1:${PORT[$1]}/" ;;
	esac
}

# tls_flags TARGET: the loadgen TLS flags for TARGET (fetching its CA root
# with GETCA first if needed); empty when the CA is not there yet.
tls_flags() {
	local t=$1
	if [[ -n ${TLSFLAG[$t]:-} ]]; then
		echo "${TLSFLAG[$t]}"
		return
	fi
	if [[ -n ${GETCA[$t]:-} && ! -s ${CA[$t]} ]]; then
		eval "${GETCA[$t]}" >"${CA[$t]}.tmp" 2>>"$WORK/logs/$t-ca.log" && mv "${CA[$t]}.tmp" "${CA[$t]}"
	fi
	[[ -s ${CA[$t]:-} ]] && echo "-cacert ${CA[$t]}"
}

wait_ready() { # target -> 0 when it answers 2xx
	local t=$1 i url flags
	url=$(url_of "$t")
	for i in $(seq 1 100); do
		if ! alive "${SPID[$t]}"; then
			FAIL[$t]="exited at start"
			note "$t exited during start-up: $(tail -n 3 "$WORK/logs/$t.log" | tr '\n' ' ')"
			return 1
		fi
		flags=""
		if [[ $t == *-tls ]]; then
			flags=$(tls_flags "$t")
			if [[ -z $flags ]]; then
				sleep 0.1
				continue
			fi
		fi
		# shellcheck disable=SC2086 # flags are words
		if "$BIN/loadgen" -probe -probe-timeout 500ms -url "$url" $flags 2>>"$WORK/logs/$t-probe.log"; then
			[[ $t == *-tls ]] && TLSFLAG[$t]=$flags
			return 0
		fi
		sleep 0.1
	done
	if [[ $t == *-tls ]] && [[ -z $(tls_flags "$t") ]] &&
		"$BIN/loadgen" -probe -probe-timeout 1s -insecure -url "$url" 2>>"$WORK/logs/$t-probe.log"; then
		TLSFLAG[$t]="-insecure"
		note "$t: could not get its CA root ($(tail -n 1 "$WORK/logs/$t-ca.log" 2>/dev/null)); measuring with -insecure (certificate not verified)"
		return 0
	fi
	FAIL[$t]="not answering"
	note "$t did not answer on $url within 10s: $(tail -n 3 "$WORK/logs/$t.log" | tr '\n' ' ') probe: $(tail -n 1 "$WORK/logs/$t-probe.log" 2>/dev/null)"
	[[ -n ${SHARES[$t]:-} ]] || stop_pid "${SPID[$t]}"
	return 1
}

# check_h3 TARGET: when h3 runs are wanted, check that TARGET answers over
# HTTP/3 too (a note, not a failure: the h3 rows will show the errors).
check_h3() {
	local t=$1
	[[ " $PROTOS " == *" h3 "* || " $PROTOS " == *" handshakes-h3 "* ]] || return 0
	[[ -z ${FAIL[$t]:-} ]] || return 0
	# shellcheck disable=SC2086
	"$BIN/loadgen" -probe -probe-timeout 2s -h3 -url "$(url_of "$t")" ${TLSFLAG[$t]} 2>>"$WORK/logs/$t-probe.log" ||
		note "$t: no HTTP/3 answer on udp 127.0.0.1:${PORT[$t]}: $(tail -n 1 "$WORK/logs/$t-probe.log")"
}

want() { [[ $WANTED == *" $1 "* ]]; }

# The backend always runs (the proxies' upstream); with a TLS proto it also
# serves HTTPS itself on 18010 (h1, h2 on TCP, h3 on UDP; self-signed) as
# the direct-tls baseline.
BACKEND_TLS=()
if want direct-tls; then
	CA[direct-tls]=$WORK/direct-tls-ca.pem
	BACKEND_TLS=(-tls-addr "127.0.0.1:${PORT[direct-tls]}" -tls-ca-out "${CA[direct-tls]}")
fi
start direct "$BIN/backend" -addr "127.0.0.1:${PORT[direct]}" -size "$SIZE" "${BACKEND_TLS[@]}"
if ! wait_ready direct; then
	log "backend failed to start; nothing to measure"
	exit 1
fi
if want direct-tls; then
	SPID[direct-tls]=${SPID[direct]}
	wait_ready direct-tls && check_h3 direct-tls
fi

if want nginx || want nginx-gw; then
	if command -v nginx >/dev/null; then
		mkdir -p "$WORK/nginx/tmp"
		start nginx nginx -p "$WORK/nginx/" -c "$ROOT/bench/peers/nginx.conf" -e "$WORK/nginx/error.log"
		SPID[nginx-gw]=${SPID[nginx]}
		if wait_ready nginx; then
			want nginx-gw && { wait_ready nginx-gw || true; }
		else
			FAIL[nginx-gw]=${FAIL[nginx]}
		fi
	else
		FAIL[nginx]="not installed"
		FAIL[nginx-gw]="not installed"
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
if want go-floor; then
	# The floor of a Go proxy (bench/cmd/floorproxy): what Go and the
	# kernel cost without any HTTP work.
	start go-floor "$BIN/floorproxy" -addr "127.0.0.1:${PORT[go-floor]}" -upstream "127.0.0.1:${PORT[direct]}"
	wait_ready go-floor || true
fi
if want go-evfloor; then
	# The floor of an event-loop proxy (bench/cmd/evfloor): one epoll loop,
	# no HTTP work, about 1 µs of user time per request.
	start go-evfloor "$BIN/evfloor" -addr "127.0.0.1:${PORT[go-evfloor]}" -upstream "127.0.0.1:${PORT[direct]}"
	wait_ready go-evfloor || true
fi
if { want meridian || want meridian-bare; } && ((MERIDIAN_OK)); then
	start meridian "$BIN/meridian" serve -config "$ROOT/bench/peers/meridian.yaml"
	SPID[meridian-bare]=${SPID[meridian]}
	if wait_ready meridian; then
		want meridian-bare && { wait_ready meridian-bare || true; }
	else
		FAIL[meridian-bare]=${FAIL[meridian]}
		note "MERIDIAN NOT MEASURED: it did not start or answer (log: $(tail -n 2 "$WORK/logs/meridian.log" | tr '\n' ' '))"
	fi
fi
if want caddy-tls; then
	if command -v caddy >/dev/null; then
		mkdir -p "$WORK/caddy-tls/data" "$WORK/caddy-tls/config"
		# Caddy's internal CA appears here once it has started.
		CA[caddy-tls]=$WORK/caddy-tls/data/caddy/pki/authorities/local/root.crt
		start caddy-tls env HOME="$WORK/caddy-tls" XDG_DATA_HOME="$WORK/caddy-tls/data" XDG_CONFIG_HOME="$WORK/caddy-tls/config" \
			caddy run --config "$ROOT/bench/peers/Caddyfile-tls" --adapter caddyfile
		wait_ready caddy-tls && check_h3 caddy-tls
	else
		FAIL[caddy-tls]="not installed"
		note "caddy not installed"
	fi
fi
if want meridian-tls && ((MERIDIAN_OK)); then
	mkdir -p "$WORK/meridian-tls"
	sed "s|WORKDIR|$WORK|g" "$ROOT/bench/peers/meridian-tls.yaml" >"$WORK/meridian-tls.yaml"
	CA[meridian-tls]=$WORK/meridian-tls-ca.pem
	GETCA[meridian-tls]="\"$BIN/meridian\" ca root -data-dir \"$WORK/meridian-tls\""
	start meridian-tls "$BIN/meridian" serve -config "$WORK/meridian-tls.yaml"
	if wait_ready meridian-tls; then
		check_h3 meridian-tls
	else
		note "MERIDIAN-TLS NOT MEASURED: it did not start or answer (log: $(tail -n 2 "$WORK/logs/meridian-tls.log" | tr '\n' ' '))"
	fi
fi

# ------------------------------------------------------------------- CPU
cpu_us() { # PID -> user + system µs of PID and its descendants (cpu_times, bench/lib.sh)
	local u s
	read -r u s < <(cpu_times "$1")
	echo $((u + s))
}

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
for t in "${ALL_TARGETS[@]}"; do
	if [[ -n ${SPID[$t]:-} && -z ${FAIL[$t]:-} ]] && alive "${SPID[$t]}"; then
		IDLE[$t]=$(sum_status VmRSS "${SPID[$t]}")
		log "$t: pid ${SPID[$t]}, idle RSS $((IDLE[$t] / 1024)) MiB"
	fi
done

# -------------------------------------------------------------------- runs
for round in $(seq 1 "$REPEAT"); do
	for proto in $PROTOS; do
		for c in $CONNS; do
			for t in $(targets_for "$proto"); do
				[[ -n ${PORT[$t]:-} ]] || {
					log "unknown target $t"
					continue
				}
				if [[ $proto == h1 && $t == *-tls ]] || [[ $proto != h1 && $t != *-tls ]]; then
					log "target $t does not fit proto $proto; skipped"
					continue
				fi
				if [[ -n ${FAIL[$t]:-} ]]; then
					printf '%s\t%s\t%s\t-\t%s\n' "$proto" "$t" "$c" "${FAIL[$t]}" >>"$RUNS_TSV"
					continue
				fi
				if ! alive "${SPID[$t]}"; then
					FAIL[$t]="died"
					note "$t died before the $proto c=$c run"
					printf '%s\t%s\t%s\t-\t%s\n' "$proto" "$t" "$c" "died" >>"$RUNS_TSV"
					continue
				fi
				name="$proto-$t-c$c-r$round"
				out="$WORK/results/$name.json"
				log "run: $proto $t c=$c ($WARMUP warmup + $DURATION), round $round/$REPEAT"
				# CPU used by the target and by the backend over the measured
				# part of the run (after the warmup), for CPU per request.
				cpu_mark=$WORK/cpu-$name
				(
					sleep "$WARMUP"
					echo "$(cpu_us "${SPID[$t]}") $(cpu_us "${SPID[direct]}")" >"$cpu_mark"
				) &
				cpu_pid=$!
				# shellcheck disable=SC2086 # PROTO_ARGS and TLSFLAG are lists of words
				if "${LG_PIN[@]}" "$BIN/loadgen" -url "$(url_of "$t")" ${PROTO_ARGS[$proto]} ${TLSFLAG[$t]:-} \
					-c "$c" -d "$DURATION" -warmup "$WARMUP" -json >"$out" 2>"$WORK/logs/loadgen-$name.log"; then
					p1=$(cpu_us "${SPID[$t]}")
					b1=$(cpu_us "${SPID[direct]}")
					wait "$cpu_pid" 2>/dev/null || true
					p0="" b0=""
					[[ -s $cpu_mark ]] && read -r p0 b0 <"$cpu_mark"
					if [[ -n $p0 && -n $b0 ]]; then
						printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$proto" "$t" "$c" "$out" "$((p1 - p0))" "$((b1 - b0))" >>"$RUNS_TSV"
					else
						printf '%s\t%s\t%s\t%s\n' "$proto" "$t" "$c" "$out" >>"$RUNS_TSV"
					fi
					log "     $(tr -d '\n ' <"$out" | sed -n 's/.*"rps":\([0-9.]*\).*"errors":\([0-9]*\).*"p99":\([0-9]*\).*/\1 req\/s, \2 errors, p99 \3 ns/p')"
				else
					wait "$cpu_pid" 2>/dev/null || true
					printf '%s\t%s\t%s\t-\t%s\n' "$proto" "$t" "$c" "loadgen failed" >>"$RUNS_TSV"
					note "$proto $t c=$c: loadgen failed: $(tail -n 2 "$WORK/logs/loadgen-$name.log" | tr '\n' ' ')"
				fi
				sleep 1
			done
		done
	done
done

for t in "${ALL_TARGETS[@]}"; do
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
	printf 'protos\t%s\n' "$PROTOS"
	((WANT_TLS)) && printf 'udp_buffers\trmem_max=%s wmem_max=%s (quic-go wants 7500000; as root it forces them with SO_RCVBUFFORCE/SO_SNDBUFFORCE)\n' "$RMEM" "$WMEM"
	((WANT_TLS)) && for t in $TLS_TARGETS; do printf 'tls_%s\t%s\n' "$t" "${TLSFLAG[$t]:-not measured}"; done
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
