#!/usr/bin/env bash
# The flood figure of admission by certificate: in a CA namespace lab, a
# stream of iperf3 from cl1 through its proxy to t3, measured alone and
# then while one core sends that proxy forged certificate hellos
# (scripts/helloflood: certificates the lab's CA signed, MACs under the
# wrong keys). Prints the stream's rate in both runs and their ratio, the
# flooded proxy's CPU in both, and how many hellos went out. Linux, root.
#
#   scripts/flood.sh [SECONDS]    (default 8 s a run)
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/.." && pwd)
secs=${1:-8}
log() { printf '[flood %s] %s\n' "$(date +%T)" "$*" >&2; }
die() { log "FAIL: $*"; exit 1; }

run=$("$here/lab.sh" up)
trap '"$here/lab.sh" down "$run" >/dev/null' EXIT
prefix=$(cat "$run/prefix")
in_ns() { local name=$1; shift; ip netns exec "$prefix-$name" "$@"; }
labjson() { "$run/bin/labserver" labjson "$run/lab/lab.json" "$@"; }
grep -q '"ca":' "$run/lab/lab.json" || die "the lab is not a CA lab (pias lab gen --ca)"
(cd "$repo" && go build -o "$run/bin/helloflood" ./scripts/helloflood)

perf_group=$(labjson group 2) # 100.65.0.2:80/tcp, iperf3 on t3
perf_addr=${perf_group%/tcp}
# cl1's proxy: the first its file names.
victim=$(awk -F'"' '/^\[\[proxy\]\]/ {p = 1; next} p && /^name *=/ {print $2; exit}' "$run/lab/cl1.toml")
[ -n "$victim" ] || die "cannot tell cl1's proxy from its file"
pid=$(cat "$run/pids/$victim")
# A busy proxy's process is the pias one in its namespace: ip netns exec
# execs it, so the pid is pias's own.
cpu() { awk '{print $14 + $15}' "/proc/$pid/stat"; }
hz=$(getconf CLK_TCK)

stream() { # → Mbit/s of a $secs s stream
  in_ns cl1 iperf3 -c "${perf_addr%:*}" -p "${perf_addr##*:}" -t "$secs" -f m | awk '/receiver/ {print $(NF-2); exit}'
}

log "flooded proxy: $victim (pid $pid); $secs s a run"
c0=$(cpu); t0=$(date +%s.%N)
alone=$(stream)
c1=$(cpu); t1=$(date +%s.%N)
# The attacker runs in cl3's namespace, sending to the proxy's endpoint.
in_ns cl3 "$run/bin/helloflood" -lab "$run/lab" -to "$victim" -for "$((secs + 2))s" >"$run/logs/helloflood.log" 2>&1 &
fl=$!
sleep 1 # the flood is under way before the stream starts
c2=$(cpu); t2=$(date +%s.%N)
flooded=$(stream)
c3=$(cpu); t3=$(date +%s.%N)
wait "$fl" || die "helloflood failed: $(cat "$run/logs/helloflood.log")"
sent=$(cat "$run/logs/helloflood.log")
awk -v a="$alone" -v f="$flooded" -v c0="$c0" -v c1="$c1" -v c2="$c2" -v c3="$c3" \
  -v t0="$t0" -v t1="$t1" -v t2="$t2" -v t3="$t3" -v hz="$hz" -v who="$victim" -v sent="$sent" 'BEGIN {
  printf "iperf3 through %s: alone %s Mbit/s, under the flood %s Mbit/s: ratio %.2f\n", who, a, f, f / a
  printf "%s CPU: alone %.2f cores, under the flood %.2f cores\n", who, (c1 - c0) / hz / (t1 - t0), (c3 - c2) / hz / (t3 - t2)
  printf "attacker: %s\n", sent
}'
