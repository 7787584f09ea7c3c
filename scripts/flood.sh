#!/usr/bin/env bash
# The flood figure of admission by certificate: in a CA namespace lab, a
# stream of iperf3 from cl1 through its proxy to t3, measured alone (before
# and after), while one core sends that proxy junk datagrams WireGuard
# drops (what any UDP flood costs), and while it sends forged certificate
# hellos (scripts/helloflood: certificates the lab's CA signed, MACs under
# the wrong keys). Prints each stream's rate and the flooded proxy's CPU,
# and the ratios. Linux, root.
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

stream() { # → Mbit/s of a $secs s stream (iperf3's server takes one
  # client at a time, and may still be closing the last: one retry)
  local out
  out=$(in_ns cl1 iperf3 -c "${perf_addr%:*}" -p "${perf_addr##*:}" -t "$secs" -f m 2>&1) ||
    { sleep 1; out=$(in_ns cl1 iperf3 -c "${perf_addr%:*}" -p "${perf_addr##*:}" -t "$secs" -f m 2>&1); } ||
    die "iperf3 failed twice: $out"
  awk '/receiver/ {print $(NF-2); exit}' <<<"$out"
}

log "flooded proxy: $victim (pid $pid); $secs s a run"
# measure [FLOOD ARGS...]: a stream while the flood runs (none: alone);
# prints Mbit/s, the proxy's cores, and the attacker's line.
measure() {
  local fl=""
  if [ $# -gt 0 ]; then
    in_ns cl3 "$run/bin/helloflood" -lab "$run/lab" -to "$victim" -for "$((secs + 2))s" "$@" >"$run/logs/helloflood.log" 2>&1 &
    fl=$!
    sleep 1 # the flood is under way before the stream starts
  fi
  local c0 t0 mbps c1 t1 sent="-"
  c0=$(cpu); t0=$(date +%s.%N)
  mbps=$(stream)
  c1=$(cpu); t1=$(date +%s.%N)
  if [ -n "$fl" ]; then
    wait "$fl" || die "helloflood failed: $(cat "$run/logs/helloflood.log")"
    sent=$(cat "$run/logs/helloflood.log")
  fi
  awk -v m="$mbps" -v c0="$c0" -v c1="$c1" -v t0="$t0" -v t1="$t1" -v hz="$hz" -v s="$sent" \
    'BEGIN {printf "%s %.2f %s\n", m, (c1 - c0) / hz / (t1 - t0), s}'
}
read -r a_mbps a_cpu _ < <(measure)
read -r j_mbps j_cpu j_sent < <(measure -junk)
read -r h_mbps h_cpu h_sent < <(measure)
read -r f_mbps f_cpu f_sent < <(measure -certs 256)
awk -v who="$victim" -v a="$a_mbps" -v ac="$a_cpu" -v j="$j_mbps" -v jc="$j_cpu" -v h="$h_mbps" -v hc="$h_cpu" \
  -v f="$f_mbps" -v fc="$f_cpu" -v js="$j_sent" -v fs="$f_sent" 'BEGIN {
  printf "iperf3 through %s, Mbit/s (its CPU, cores):\n", who
  printf "  alone              %8s (%.2f)\n", (a + h) / 2, (ac + hc) / 2
  printf "  under a junk flood %8s (%.2f)  %s\n", j, jc, js
  printf "  under a hello flood%8s (%.2f)  %s\n", f, fc, fs
  printf "ratio hello flood / alone %.2f; hello flood / junk flood %.2f\n", f / ((a + h) / 2), f / j
}'
