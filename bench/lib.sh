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
