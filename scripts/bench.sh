#!/usr/bin/env bash
# bench.sh - ringcached against memcached and the network floor, same
# machine, same run.
#
# For each worker-thread count (-t), starts the server under test and
# memcached with the same -t and -m on free loopback ports, and the network
# floor build/rc-floor (scripts/floor.c: one thread that answers every get
# with a hit of a fixed size and stores nothing; one floor process per value
# size the workloads use, started with the same flags and CPU pinning),
# warms them (every workload's key space is prefilled, then a short
# unmeasured run; the floor only gets the run), then runs every workload
# against each server in turn, A B C, for several rounds, with
# build/rc-loadgen. First closed loop (as fast as each
# server answers), then open loop at fixed rates per workload for all
# servers (fractions of memcached's closed-loop median), so that p99 and
# p99.9 are also compared at the same offered rate: a closed-loop p99
# mostly measures the queue a faster server lets the generator build. For
# every run it records the generator's requests/s, p50/p99/p99.9 and the
# server's CPU time
# (utime + stime from /proc/PID/stat, read before and after, and each of
# the two: user and kernel time), and the
# steal time of the machine during the run (/proc/stat: time the hypervisor
# ran something else while this machine's CPUs had work; on a shared host
# it comes in bursts of tens of milliseconds and puts them into every tail
# it lands in). A run with more steal than BENCH_STEAL_MS is run again, up
# to BENCH_TRIES times in all, and the try with the least steal is kept, so
# that tails compare the servers rather than the host's neighbours; the
# report prints each figure's steal.
# scripts/bench_report.py prints, per -t, the median of the rounds for each
# server and the ratios ringcached / memcached: above 1 is better for
# requests/s, below 1 is better for p99 and CPU per million requests; and
# ringcached / floor for requests/s and CPU per request (the floor's CPU per
# request is the kernel's TCP cost plus the least userspace work, so 1.10
# means ringcached spends 10% over it).
#
# On the workloads of the floor targets (get90-100B and get90-100B-P16) the
# closed-loop rounds also run the store floor, rc-floor --store (one more
# process, prefilled like the servers): the network floor plus what a plain
# hash table store does per request (hash, probe, compare, copy out, with
# ringcached's two-stage prefetch). The report gives its CPU per request as
# a multiple of the floor's, which is where a store's own work begins, and
# ringcached's as a multiple of it.
#
# Two controls, each a server run a second time in the same rounds (the
# same process), so that its two runs differ only by the host: the open loop
# runs ringcached again right after memcached (server "ringcached-again"),
# and at -t 1 the closed loop of the floor targets' workloads runs the floor
# again after the store floor ("floor-again"). The report's ratio between
# the two runs of one server says how far the host alone moved that figure,
# the scale against which ringcached / memcached's open-loop tails and
# ringcached / floor's CPU per request are read.
#
# All servers are stopped by pid at the end, on error and on ^C.
#
# Environment (flags override):
#   RINGCACHED      server under test            [build/ringcached]
#   MEMCACHED       reference server             [/usr/bin/memcached]
#   LOADGEN         load generator               [build/rc-loadgen]
#   FLOOR           network floor                [build/rc-floor]
#   BENCH_THREADS   -t values, e.g. "1 2"        [1 2]
#   BENCH_MEM       -m for both, MiB             [1024]
#   BENCH_ROUNDS    rounds (A B per workload)    [3; 1 when quick]
#   BENCH_DURATION  seconds per run              [4; 1 when quick]
#   BENCH_LG_THREADS generator threads           [1]
#   BENCH_OPEN      open-loop rates as fractions of memcached's closed-loop
#                   median requests/s, e.g. "0.5 0.8"; 0 skips the
#                   open-loop passes [0.5 0.8]
#   BENCH_STEAL_MS  a run with more steal (ms, all CPUs) is retried [40]
#   BENCH_TRIES     tries per run at most, the least stolen kept [3]
#   BENCH_PIN       auto: when there are CPUs enough for -t plus the
#                   generator's threads, pin the servers to the first -t
#                   CPUs and the generator to the next ones (taskset), so
#                   they do not fight over a CPU; 0: never pin [auto]
#   BENCH_QUICK=1   smoke test: 1 round of 1 s runs
#   BENCH_ONLY      regex of workload names to run, e.g. 'get90-4KB|set50.*'
#   BENCH_AGAIN=0   skips the controls: the second ringcached run per
#                   open-loop round, the floor's second run on the floor
#                   targets' workloads
#   BENCH_INSNS=0   skips the instruction pass: callgrind's instructions
#                   per request of each server at -t 1 on get90-100B and
#                   get90-100B-P16 (when they run), into insns.tsv
#   BENCH_INSNS_N   requests per measured callgrind run [20000]
#   BENCH_OUT       where the raw results go     [build/bench]
set -euo pipefail
cd "$(dirname "$0")/.."

usage() {
	sed -n '2,/^set -e/{/^set -e/d;s/^# \{0,1\}//;p}' "$0"
	cat <<EOF
Flags:
  -t, --threads "LIST"   -t values to run at (BENCH_THREADS)
  -r, --rounds N         rounds (BENCH_ROUNDS)
  -d, --duration SEC     seconds per run (BENCH_DURATION)
  -q, --quick            one round of 1 s runs (BENCH_QUICK=1)
  -h, --help
EOF
}

RINGCACHED=${RINGCACHED:-build/ringcached}
MEMCACHED=${MEMCACHED:-/usr/bin/memcached}
LOADGEN=${LOADGEN:-build/rc-loadgen}
FLOOR=${FLOOR:-build/rc-floor}
FLOOR_TARGETS='get90-100B|get90-100B-P16' # the store floor runs these
THREADS=${BENCH_THREADS:-1 2}
MEM=${BENCH_MEM:-1024}
LG_THREADS=${BENCH_LG_THREADS:-1}
OUT=${BENCH_OUT:-build/bench}
QUICK=${BENCH_QUICK:-0}
ROUNDS=${BENCH_ROUNDS:-}
DURATION=${BENCH_DURATION:-}
OPEN=${BENCH_OPEN:-0.5 0.8}
PIN=${BENCH_PIN:-auto}
STEAL_MS=${BENCH_STEAL_MS:-40}
TRIES=${BENCH_TRIES:-3}
INSNS=${BENCH_INSNS:-1}
AGAIN=${BENCH_AGAIN:-1}
INSNS_N=${BENCH_INSNS_N:-20000}
PY=/usr/bin/python3

die() {
	echo "bench.sh: $*" >&2
	exit 2
}

while [ $# -gt 0 ]; do
	case $1 in
	-t | --threads) [ $# -ge 2 ] || die "$1 needs a value"; THREADS=$2; shift 2 ;;
	-r | --rounds) [ $# -ge 2 ] || die "$1 needs a value"; ROUNDS=$2; shift 2 ;;
	-d | --duration) [ $# -ge 2 ] || die "$1 needs a value"; DURATION=$2; shift 2 ;;
	-q | --quick) QUICK=1; shift ;;
	-h | --help) usage; exit 0 ;;
	*) die "unknown argument '$1' (try --help)" ;;
	esac
done
if [ "$QUICK" = 1 ]; then
	ROUNDS=${ROUNDS:-1}
	DURATION=${DURATION:-1}
fi
ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-4}

[[ $ROUNDS =~ ^[1-9][0-9]*$ ]] || die "rounds must be a positive integer, got '$ROUNDS'"
[[ $DURATION =~ ^[0-9]+(\.[0-9]+)?$ ]] || die "duration must be seconds, got '$DURATION'"
[[ $MEM =~ ^[1-9][0-9]*$ ]] || die "BENCH_MEM must be MiB, got '$MEM'"
[[ $STEAL_MS =~ ^[0-9]+$ ]] || die "BENCH_STEAL_MS must be milliseconds, got '$STEAL_MS'"
[[ $TRIES =~ ^[1-9][0-9]*$ ]] || die "BENCH_TRIES must be a positive integer, got '$TRIES'"
[[ $AGAIN = 0 || $AGAIN = 1 ]] || die "BENCH_AGAIN must be 0 or 1, got '$AGAIN'"
[[ $PIN = auto || $PIN = 0 ]] || die "BENCH_PIN must be auto or 0, got '$PIN'"
[ "$OPEN" = 0 ] && OPEN=
for f in $OPEN; do
	[[ $f =~ ^(0?\.[0-9]*[1-9][0-9]*|1(\.0*)?)$ ]] || die "BENCH_OPEN must be fractions in (0, 1], got '$f'"
done
for t in $THREADS; do
	[[ $t =~ ^[1-9][0-9]*$ ]] || die "thread counts must be positive integers, got '$t'"
done
for bin in "$RINGCACHED" "$MEMCACHED" "$LOADGEN" "$FLOOR"; do
	[ -x "$bin" ] || die "$bin is missing or not executable (run make; set RINGCACHED/MEMCACHED/LOADGEN/FLOOR)"
done

# name | generator arguments. Distinct key prefixes keep one workload's
# values out of another's key space; each key space is prefilled once.
WORKLOADS=(
	"get90-100B|-c 50 -P 1 -r 9:1 -v 100 -k 100000 --key-prefix b100:"
	"get90-100B-P16|-c 50 -P 16 -r 9:1 -v 100 -k 100000 --key-prefix b100:"
	"mget10-100B|-c 50 -P 1 -r 9:1 -m 10 -v 100 -k 100000 --key-prefix b100:"
	"mget100-100B|-c 50 -P 1 -r 9:1 -m 100 -v 100 -k 100000 --key-prefix b100:"
	"get90-4KB|-c 50 -P 1 -r 9:1 -v 4096 -k 20000 --key-prefix b4k:"
	"set50-100B|-c 50 -P 1 -r 1:1 -v 100 -k 100000 --key-prefix b100:"
)
# BENCH_ONLY: an extended regex; only the workloads whose name matches run.
if [ -n "${BENCH_ONLY:-}" ]; then
	kept=()
	for w in "${WORKLOADS[@]}"; do
		[[ ${w%%|*} =~ ^(${BENCH_ONLY})$ ]] && kept+=("$w")
	done
	[ ${#kept[@]} -gt 0 ] || die "BENCH_ONLY '$BENCH_ONLY' matches no workload"
	WORKLOADS=("${kept[@]}")
fi
PREFILLS=(
	"-c 8 -v 100 -k 100000 --key-prefix b100:"
	"-c 8 -v 4096 -k 20000 --key-prefix b4k:"
)

# The floor's value size for a workload: its generator's -v.
value_size() {
	[[ $1 =~ -v\ ([0-9]+) ]] || die "no -v in workload arguments '$1'"
	echo "${BASH_REMATCH[1]}"
}

RC_PID=
MC_PID=
SF_PID=
declare -A FL_PID=() FL_PORT=() # by value size
stop_servers() {
	local pid
	for pid in $RC_PID $MC_PID $SF_PID "${FL_PID[@]}"; do
		kill "$pid" 2>/dev/null || true
	done
	for pid in $RC_PID $MC_PID $SF_PID "${FL_PID[@]}"; do
		# Bounded wait, then the hard way.
		for _ in $(seq 50); do
			kill -0 "$pid" 2>/dev/null || break
			sleep 0.1
		done
		kill -9 "$pid" 2>/dev/null || true
		wait "$pid" 2>/dev/null || true
	done
	RC_PID=
	MC_PID=
	SF_PID=
	FL_PID=()
	FL_PORT=()
}
trap stop_servers EXIT
trap 'exit 130' INT TERM

free_port() {
	"$PY" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# cpu_ticks PID: "utime stime" in clock ticks (fields 14 and 15; the
# command name in field 2 may hold spaces, so count from its ')').
cpu_ticks() {
	local stat
	stat=$(<"/proc/$1/stat") || return 1
	stat=${stat##*) }
	# shellcheck disable=SC2086
	set -- $stat
	echo "${12} ${13}"
}

# ctx_switches PID: "voluntary involuntary" context switches of all the
# process's threads so far (/proc/PID/task/*/status; a voluntary one is a
# sleep, so each is also a later wake-up).
ctx_switches() {
	awk '/^voluntary_ctxt_switches/ { v += $2 } /^nonvoluntary_ctxt_switches/ { n += $2 }
	     END { print v + 0, n + 0 }' /proc/"$1"/task/*/status 2>/dev/null
}

# steal_ticks: the machine's steal time in clock ticks (/proc/stat's first
# line: cpu user nice system idle iowait irq softirq steal ...).
steal_ticks() {
	local _cpu user nice sys idle iowait irq softirq steal _rest
	read -r _cpu user nice sys idle iowait irq softirq steal _rest </proc/stat
	echo "$steal"
}

wait_ready() { # PID PORT NAME [SECONDS]
	for _ in $(seq $((${4:-5} * 20))); do
		kill -0 "$1" 2>/dev/null || die "$3 exited at start-up (see its messages above)"
		if "$PY" -c 'import socket, sys; socket.create_connection(("127.0.0.1", int(sys.argv[1])), 0.2).close()' "$2" 2>/dev/null; then
			return 0
		fi
		sleep 0.05
	done
	die "$3 did not listen on port $2 within ${4:-5} s"
}

USER_FLAG=()
if [ "$(id -u)" = 0 ]; then
	USER_FLAG=(-u "${BENCH_USER:-nobody}") # memcached refuses root without -u
fi

# pin T: sets SRV_PIN and LG_PIN, the taskset prefixes for -t T (or none).
SRV_PIN=()
LG_PIN=()
pin() {
	SRV_PIN=()
	LG_PIN=()
	if [ "$PIN" = auto ] && [ "$(nproc)" -ge $(($1 + LG_THREADS)) ] &&
		command -v taskset >/dev/null; then
		SRV_PIN=(taskset -c "0-$(($1 - 1))")
		LG_PIN=(taskset -c "$1-$(($1 + LG_THREADS - 1))")
	fi
}

start_server() { # VAR BIN THREADS PORT [FLAGS...]: starts BIN, its pid into VAR
	local var=$1 bin=$2 t=$3 port=$4
	shift 4
	# taskset execs the server, so $! is the server's pid.
	"${SRV_PIN[@]}" "$bin" -l 127.0.0.1 -p "$port" -U 0 -t "$t" -m "$MEM" "${USER_FLAG[@]}" "$@" &
	printf -v "$var" '%s' "$!"
}

# start_floors T: one rc-floor per value size of the workloads, each warmed
# by a short unmeasured run (it stores nothing, so there is no prefill);
# and the store floor when a floor target's workload runs, warmed as the
# servers are.
start_floors() {
	local w v pid port
	for w in "${WORKLOADS[@]}"; do
		v=$(value_size "${w#*|}")
		[ -z "${FL_PID[$v]:-}" ] || continue
		port=$(free_port)
		start_server pid "$FLOOR" "$1" "$port" --value-size "$v"
		FL_PID[$v]=$pid
		FL_PORT[$v]=$port
		wait_ready "$pid" "$port" "rc-floor ($v-byte values)"
		"$LOADGEN" -s "127.0.0.1:$port" -c 50 -k 100000 --key-prefix b100: -v "$v" -D 1 -q \
			>/dev/null || die "warm-up run against rc-floor ($v-byte values) failed"
	done
	for w in "${WORKLOADS[@]}"; do
		[[ ${w%%|*} =~ ^(${FLOOR_TARGETS})$ ]] || continue
		SF_PORT=$(free_port)
		start_server SF_PID "$FLOOR" "$1" "$SF_PORT" --store
		wait_ready "$SF_PID" "$SF_PORT" "rc-floor --store"
		warm "$SF_PORT" "rc-floor --store"
		break
	done
}

mkdir -p "$OUT"
RESULTS=$OUT/results.tsv
printf 'threads\tmode\trate\tworkload\tserver\tround\trps\tp50_us\tp99_us\tserver_cpu_s\trequests\terrors\twrong\tlg_cpu_s\tp999_us\tsteal_ms\ttries\tvcs\tivcs\tuser_s\tsys_s\n' >"$RESULTS"
TCK=$(getconf CLK_TCK)

# run_one T WORKLOAD_NAME ARGS SERVER_LABEL PID PORT ROUND [RATE FRACTION]
# One generator run; RATE (requests/s) makes it open loop, recorded as mode
# open@FRACTION.
run_one() {
	local t=$1 name=$2 args=$3 label=$4 pid=$5 port=$6 round=$7 rate=${8:-0}
	local c0 c1 s0 s1 x0 x1 json rc steal try best='' best_steal=0 mode=closed rate_arg=()
	if [ "$rate" != 0 ]; then
		mode=open@$9
		rate_arg=(--rate "$rate")
	fi
	for try in $(seq "$TRIES"); do
		rc=0
		c0=$(cpu_ticks "$pid") || die "$label is gone"
		x0=$(ctx_switches "$pid")
		s0=$(steal_ticks)
		# shellcheck disable=SC2086
		json=$("${LG_PIN[@]}" "$LOADGEN" -s "127.0.0.1:$port" -t "$LG_THREADS" $args \
			"${rate_arg[@]}" -D "$DURATION" --json -q) || rc=$?
		s1=$(steal_ticks)
		x1=$(ctx_switches "$pid")
		c1=$(cpu_ticks "$pid") || die "$label died during $name"
		[ $rc -le 1 ] || die "$LOADGEN failed ($rc) on $name against $label"
		[ -n "$json" ] || die "$LOADGEN printed nothing on $name against $label"
		steal=$(((s1 - s0) * 1000 / TCK))
		if [ -z "$best" ] || [ "$steal" -lt "$best_steal" ]; then
			best=$("$PY" - "$t" "$mode" "$rate" "$name" "$label" "$round" "$c0" "$c1" \
				"$TCK" "$steal" "$try" "$x0" "$x1" "$json" <<'EOF'
import json, sys
t, mode, rate, name, label, rnd, c0, c1, tck, steal, tries, x0, x1, raw = sys.argv[1:]
d = json.loads(raw)
user, sys_ = ((int(b) - int(a)) / int(tck) for a, b in zip(c0.split(), c1.split()))
cpu = user + sys_
cs = [int(b) - int(a) for a, b in zip(x0.split(), x1.split())]
lat = d["latency_us"]["all"]
print("\t".join(str(x) for x in (t, mode, rate, name, label, rnd, round(d["rps"], 1),
      lat["p50"], lat["p99"], round(cpu, 3), d["requests"], d["errors"],
      d["wrong_values"], round(d["cpu_user_s"] + d["cpu_sys_s"], 3), lat["p999"],
      steal, tries, *cs, round(user, 3), round(sys_, 3))))
EOF
)
			best_steal=$steal
		fi
		[ "$steal" -gt "$STEAL_MS" ] || break
	done
	printf '%s\n' "$best" >>"$RESULTS"
	printf '  t=%s %-8s round %s %-15s %-16s %s\n' "$t" "$mode" "$round" "$name" "$label" \
		"$(awk -F'\t' '{printf "%.0f req/s, p99 %s us, p99.9 %s us, %s errors, steal %s ms (try %s)", $7, $9, $15, $12, $16, $17}' <<<"$best")"
}

# open_rate T WORKLOAD FRACTION: FRACTION x memcached's median closed-loop
# requests/s.
open_rate() {
	"$PY" - "$RESULTS" "$1" "$2" "$3" <<'EOF'
import csv, statistics, sys
path, t, name, frac = sys.argv[1:]
with open(path, newline="") as f:
    rps = [float(r["rps"]) for r in csv.DictReader(f, delimiter="\t")
           if (r["threads"], r["mode"], r["workload"], r["server"]) ==
              (t, "closed", name, "memcached")]
print(int(max(100, round(statistics.median(rps) * float(frac), -2))))
EOF
}

warm() { # PORT LABEL
	local p
	for p in "${PREFILLS[@]}"; do
		# shellcheck disable=SC2086
		"$LOADGEN" -s "127.0.0.1:$1" $p --prefill -n 0 -q >/dev/null ||
			die "prefill of $2 failed: $LOADGEN $p --prefill -n 0"
	done
	"$LOADGEN" -s "127.0.0.1:$1" -c 50 -k 100000 --key-prefix b100: -D 1 -q >/dev/null ||
		die "warm-up run against $2 failed"
}

echo "ringcached: $RINGCACHED"
echo "memcached:  $MEMCACHED ($("$MEMCACHED" -V 2>/dev/null || echo '?'))"
echo "floor:      $FLOOR (one thread at every -t; with --store on $FLOOR_TARGETS)"
echo "-t {$THREADS}, -m $MEM, $ROUNDS rounds x ${DURATION} s, generator threads $LG_THREADS, $(nproc) CPUs"
echo "open loop at {${OPEN:-none}} x memcached's closed-loop requests/s"
for t in $THREADS; do
	pin "$t"
	if [ ${#SRV_PIN[@]} -gt 0 ]; then
		echo "-t $t: servers on CPUs ${SRV_PIN[2]}, generator on CPUs ${LG_PIN[2]}"
	else
		echo "-t $t: not pinned (servers and generator share the CPUs)"
	fi
	RC_PORT=$(free_port)
	start_server RC_PID "$RINGCACHED" "$t" "$RC_PORT"
	wait_ready "$RC_PID" "$RC_PORT" ringcached
	MC_PORT=$(free_port)
	start_server MC_PID "$MEMCACHED" "$t" "$MC_PORT"
	wait_ready "$MC_PID" "$MC_PORT" memcached
	warm "$RC_PORT" ringcached
	warm "$MC_PORT" memcached
	start_floors "$t"
	for round in $(seq "$ROUNDS"); do
		for w in "${WORKLOADS[@]}"; do
			name=${w%%|*}
			args=${w#*|}
			v=$(value_size "$args")
			run_one "$t" "$name" "$args" ringcached "$RC_PID" "$RC_PORT" "$round"
			run_one "$t" "$name" "$args" memcached "$MC_PID" "$MC_PORT" "$round"
			run_one "$t" "$name" "$args" floor "${FL_PID[$v]}" "${FL_PORT[$v]}" "$round"
			if [[ $name =~ ^(${FLOOR_TARGETS})$ ]]; then
				run_one "$t" "$name" "$args" store "$SF_PID" "$SF_PORT" "$round"
				if [ "$AGAIN" = 1 ] && [ "$t" = 1 ]; then
					run_one "$t" "$name" "$args" floor-again "${FL_PID[$v]}" \
						"${FL_PORT[$v]}" "$round"
				fi
			fi
		done
	done
	for frac in $OPEN; do
		declare -A RATE=()
		for w in "${WORKLOADS[@]}"; do
			RATE[${w%%|*}]=$(open_rate "$t" "${w%%|*}" "$frac")
		done
		for round in $(seq "$ROUNDS"); do
			for w in "${WORKLOADS[@]}"; do
				name=${w%%|*}
				args=${w#*|}
				v=$(value_size "$args")
				run_one "$t" "$name" "$args" ringcached "$RC_PID" "$RC_PORT" "$round" "${RATE[$name]}" "$frac"
				run_one "$t" "$name" "$args" memcached "$MC_PID" "$MC_PORT" "$round" "${RATE[$name]}" "$frac"
				if [ "$AGAIN" = 1 ]; then
					run_one "$t" "$name" "$args" ringcached-again "$RC_PID" "$RC_PORT" "$round" \
						"${RATE[$name]}" "$frac"
				fi
				run_one "$t" "$name" "$args" floor "${FL_PID[$v]}" "${FL_PORT[$v]}" "$round" "${RATE[$name]}" "$frac"
			done
		done
	done
	stop_servers
done

# The instruction pass (BENCH_INSNS): each server alone under
# valgrind --tool=callgrind at -t 1 (all its threads, user space only: the
# kernel's share is not counted), for the workloads the floor targets are
# set on. Counters are zeroed, N requests are sent and the counters dumped;
# then the same with 2N; (I(2N) - I(N)) / N is the cost of one request
# without the fixed cost of a run (50 connects, the generator's start).
INSNS_PASS_WORKLOADS=$FLOOR_TARGETS
INSNS_FILE=$OUT/insns.tsv
rm -f "$INSNS_FILE"

# callgrind_total OUT: the instruction total of callgrind's newest dump, the
# OUT.N with the highest N.
callgrind_total() {
	local f n=0
	for f in "$1".*; do
		[ -e "$f" ] && [ "${f##*.}" -gt "$n" ] && n=${f##*.}
	done
	f=$1.$n
	[ -e "$f" ] || die "callgrind wrote no dump ($1.*)"
	awk '/^(summary|totals):/ { print $2; exit }' "$f"
}

# insns_server LABEL BIN PREFILL(0/1) [FLAGS...]: one line per workload of
# the pass into INSNS_FILE: server, workload, instructions per request.
insns_server() {
	local label=$1 bin=$2 fill=$3 port pid dir w name args ir1 ir2 n i
	shift 3
	dir=$(mktemp -d)
	port=$(free_port)
	# As root, -u root: a server that changed its user no longer answers
	# callgrind_control (vgdb), and memcached refuses root without -u. 256
	# open files: memcached sets its limit to its -c, and valgrind refuses
	# any limit other than the one it started with; -c 256 for all.
	(
		ulimit -Sn 256
		exec valgrind -q --tool=callgrind --callgrind-out-file="$dir/cg" \
			"$bin" -l 127.0.0.1 -p "$port" -U 0 -t 1 -m "$MEM" -c 256 ${USER_FLAG[@]:+-u "$(id -un)"} "$@"
	) &
	pid=$!
	RC_PID=$pid # stopped with the others on error
	wait_ready "$pid" "$port" "$label under callgrind" 600
	[ "$fill" = 0 ] || warm "$port" "$label"
	for w in "${WORKLOADS[@]}"; do
		name=${w%%|*}
		args=${w#*|}
		[[ $name =~ ^(${INSNS_PASS_WORKLOADS})$ ]] || continue
		# shellcheck disable=SC2086
		"$LOADGEN" -s "127.0.0.1:$port" $args -n "$INSNS_N" -q >/dev/null ||
			die "unmeasured callgrind run of $name against $label failed"
		for i in 1 2; do
			n=$((INSNS_N * i))
			callgrind_control -z "$pid" >/dev/null 2>&1
			# shellcheck disable=SC2086
			"$LOADGEN" -s "127.0.0.1:$port" $args -n "$n" -q >/dev/null ||
				die "callgrind run of $name against $label failed"
			callgrind_control -d "$pid" >/dev/null 2>&1
			printf -v "ir$i" '%s' "$(callgrind_total "$dir/cg")"
		done
		printf '%s\t%s\t%s\n' "$label" "$name" \
			"$(awk -v a="$ir1" -v b="$ir2" -v n="$INSNS_N" 'BEGIN { printf "%.0f", (b - a) / n }')" \
			>>"$INSNS_FILE"
		echo "  callgrind $name $label: $(tail -1 "$INSNS_FILE" | cut -f3) instructions/request"
	done
	stop_servers
	rm -rf "$dir"
}

if [ "$INSNS" = 0 ]; then
	:
elif ! command -v valgrind >/dev/null || ! command -v callgrind_control >/dev/null; then
	echo "instruction pass skipped: valgrind is not installed (scripts/deps.sh installs it)"
elif ! printf '%s\n' "${WORKLOADS[@]%%|*}" | grep -Eqx "$INSNS_PASS_WORKLOADS"; then
	:
else
	echo "instructions per request (callgrind, -t 1, $INSNS_N and $((2 * INSNS_N)) requests)"
	printf 'server\tworkload\tinsns\n' >"$INSNS_FILE"
	insns_server ringcached "$RINGCACHED" 1
	insns_server memcached "$MEMCACHED" 1
	insns_server floor "$FLOOR" 0 --value-size 100
	insns_server store "$FLOOR" 1 --store
fi

echo
status=0
report=("$RESULTS")
if [ -s "$INSNS_FILE" ]; then
	report+=("$INSNS_FILE")
fi
"$PY" scripts/bench_report.py "${report[@]}" || status=$?
echo "raw results: $RESULTS"
exit "$status"
