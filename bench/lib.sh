# Process helpers shared by bench/run.sh and bench/ab.sh (sourced).
# shellcheck shell=bash

# descendants PID: all (transitive) child pids of PID, from /proc.
descendants() {
	local parent=$1 f line pid
	local -a kids=() fields
	for f in /proc/[0-9]*/stat; do
		read -r line 2>/dev/null <"$f" || continue
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

# start NAME CMD...: runs CMD in the background, pinned with SRV_PIN, its
# output in $WORK/logs/NAME.log, and records its pid in SPID[NAME] and
# STARTED (the sourcing script's globals, which its cleanup stops).
start() {
	local name=$1
	shift
	"${SRV_PIN[@]}" "$@" >"$WORK/logs/$name.log" 2>&1 &
	SPID[$name]=$!
	STARTED+=("$!")
}

# port_busy PORT: something accepts TCP connections on 127.0.0.1:PORT.
port_busy() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

CLK_TCK=$(getconf CLK_TCK 2>/dev/null || echo 100)

# cpu_times PID: "USER_US SYSTEM_US", the CPU time PID and its descendants
# have used so far (from /proc/PID/stat).
cpu_times() {
	local p line u=0 s=0
	local -a f
	for p in "$1" $(descendants "$1"); do
		read -r line 2>/dev/null <"/proc/$p/stat" || continue
		read -ra f <<<"${line##*) }"
		u=$((u + f[11]))
		s=$((s + f[12]))
	done
	echo "$((u * 1000000 / CLK_TCK)) $((s * 1000000 / CLK_TCK))"
}

# stop_system_services stops and disables the named services: packages
# may start them on install (ports 80, 2019, ...), and the benchmarks run
# their own instances on 18000-18029.
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

peer_note() {
	if declare -F note >/dev/null; then note "$@"; else log "$@"; fi
}

# install_peers WANT LOGFILE PROGRAM... installs with apt-get (Debian's
# packages) those of the programs that are missing, when WANT is 1 and it
# can (root, or sudo); it says what it could not do (through the caller's
# note function if it has one, else its log) and carries on.
install_peers() {
	local want=$1 aptlog=$2 p
	shift 2
	local missing=()
	for p in "$@"; do
		command -v "$p" >/dev/null || missing+=("$p")
	done
	((${#missing[@]})) || return 0
	if [[ $want != 1 ]]; then
		peer_note "peers missing and BENCH_INSTALL=0: ${missing[*]}"
		return 0
	fi
	local sudo=()
	if [[ $(id -u) != 0 ]]; then
		if ! command -v sudo >/dev/null; then
			peer_note "peers missing (${missing[*]}) and not root: cannot install"
			return 0
		fi
		sudo=(sudo)
	fi
	log "installing missing peers: ${missing[*]}"
	mkdir -p "$(dirname "$aptlog")"
	if "${sudo[@]}" apt-get update -qq >"$aptlog" 2>&1 &&
		DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq "${missing[@]}" >>"$aptlog" 2>&1; then
		stop_system_services "${missing[@]}"
	else
		peer_note "apt-get install ${missing[*]} failed (see $aptlog); continuing with what is available"
		tail -n 5 "$aptlog" >&2 || true
	fi
}
