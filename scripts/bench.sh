#!/usr/bin/env bash
# Runs pias's benchmarks and prints their medians.
#
#   scripts/bench.sh [COUNT]     the router's per-packet cost, and one TCP stream
#                                through pias next to one direct wireguard-go
#                                tunnel, interleaved in the same run, with their
#                                ratio (default 5 runs of each)
#   scripts/bench.sh hop         the cost of a proxy hop, in one run (root: it
#                                brings up the namespace lab of scripts/lab.sh):
#                                (a) the crypto floor and BenchmarkProxyHop;
#                                (b) CPU-seconds per GB at each pias proxy during
#                                iperf3, IAP ≠ JAP and IAP = JAP; (c) the same for
#                                a wireguard-go relay with kernel forwarding;
#                                (d) throughput of the paths next to a direct
#                                wireguard-go tunnel; (e) round trips of small UDP
#                                requests; (f) 1, 2, 4 and 8 parallel streams; and
#                                the proxies' RSS during and after the load.
#                                PIAS_BENCH_SECS (default 5) is each stream's length,
#                                PIAS_BENCH_ROUNDS (default 3) how many times each
#                                stream runs, the paths in turn; the summary takes
#                                each figure's median over the rounds.
#                                PIAS_BENCH_RATE (default 400M) is the total rate
#                                of the runs that hold every path to one rate (1 and
#                                4 streams), where CPU per GB compares like with like.
set -euo pipefail
cd "$(dirname "$0")/.."

# medians FILE: the median of each column value per benchmark name and unit.
medians() {
  awk '
/^Benchmark/ {
  name=$1; sub(/-[0-9]+$/, "", name)
  for (i = 3; i < NF; i += 2) { key = name " " $(i+1); vals[key] = vals[key] " " $i }
}
END {
  for (k in vals) {
    n = split(substr(vals[k], 2), a, " ")
    for (i = 1; i <= n; i++) for (j = i + 1; j <= n; j++) if (a[j] + 0 < a[i] + 0) { t = a[i]; a[i] = a[j]; a[j] = t }
    m = (n % 2) ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2
    printf "  %-45s %12.4g %s\n", substr(k, 1, index(k, " ") - 1), m, substr(k, index(k, " ") + 1)
  }
}' "$1" | sort
}

if [ "${1:-}" != hop ]; then
  count=${1:-5}
  out=$(mktemp)
  trap 'rm -f "$out"' EXIT
  go test -run '^$' -bench . -benchmem -count "$count" ./router | tee -a "$out"
  go test -run '^$' -bench Throughput -benchtime 20x -count "$count" ./lab | tee -a "$out"
  echo
  echo "medians over $count runs:"
  medians "$out"
  exit 0
fi

# ---------------------------------------------------------------- hop

[ "$(id -u)" = 0 ] || { echo "bench.sh hop needs root (network namespaces)" >&2; exit 1; }
for c in jq iperf3 wg ip go; do command -v "$c" >/dev/null || { echo "bench.sh hop needs $c" >&2; exit 1; }; done
secs=${PIAS_BENCH_SECS:-5}
rate=${PIAS_BENCH_RATE:-400M}
[[ "$rate" =~ ^[1-9][0-9]*[KMG]?$ ]] || { echo "bench.sh hop: PIAS_BENCH_RATE must be a rate such as 400M, not \"$rate\"" >&2; exit 2; }
rounds=${PIAS_BENCH_ROUNDS:-3}
[[ "$rounds" =~ ^[1-9][0-9]*$ ]] || { echo "bench.sh hop: PIAS_BENCH_ROUNDS must be a whole number of 1 or more, not \"$rounds\"" >&2; exit 2; }
tmp=$(mktemp -d)
run=""
cleanup() {
  rc=$?
  [ -n "$run" ] && scripts/lab.sh down "$run" >/dev/null 2>&1
  rm -rf "$tmp"
  exit $rc
}
trap cleanup EXIT

say() { printf '%s\n' "$*"; }
# per BASE VALUE: VALUE / BASE to 2 decimals ("-" when BASE is 0).
per() { awk -v b="$1" -v v="$2" 'BEGIN { if (b + 0 == 0) print "-"; else printf "%.2f", v / b }'; }

# -cpu 1 is the figure of record: the three devices' stages run one after
# another on one P, as a node runs until it keeps a core busy (package
# cores), so the CPU per packet is the sum of the stages' work. With two Ps
# an idle P spins looking for work at every handoff, and getrusage counts
# that too.
say "== (a) the crypto floor and one hop in process (go test -bench ProxyHop -cpu 1 ./node, medians of 5)"
go test -run '^$' -bench ProxyHop -benchtime 50000x -count 5 -cpu 1 ./node >"$tmp/go.txt"
medians "$tmp/go.txt" | tee "$tmp/medians.txt"
say "-- the same on two Ps (-cpu 2: the scheduler's spinning counted too), hop/floor, direct/floor, hop/direct:"
go test -run '^$' -bench ProxyHop -benchtime 50000x -count 5 -cpu 2 ./node >"$tmp/go2.txt"
medians "$tmp/go2.txt" | grep -E 'hop/floor|direct/floor|hop/direct'
# The floor is BenchmarkProxyHop's own (CPU time by getrusage, so time
# other processes take from it on a shared machine does not count): the
# median over its modes and runs.
floor_ns=$(grep -o '[0-9.e+]* floor-ns' "$tmp/go.txt" | awk '{print $1}' | sort -g | awk '{a[NR] = $1} END {print a[int((NR + 1) / 2)]}')
# CPU-seconds per GB of 1420-byte packets at the floor: one seal and one open each.
floor_gb=$(awk -v ns="$floor_ns" 'BEGIN { printf "%.3f", ns / 1420 }')
say "floor: seal+open of 1420 bytes $floor_ns ns of CPU = $floor_gb CPU-s per GB"
# The proxy's own goroutines, told from A's and B's by their pprof labels.
go test -run '^$' -bench 'ProxyHop/local' -benchtime 200000x -count 1 -cpu 1 -cpuprofile "$tmp/cpu.prof" -o "$tmp/node.test" ./node >"$tmp/prof.txt"
proxy_ms=$(go tool pprof -tags "$tmp/node.test" "$tmp/cpu.prof" 2>/dev/null | awk '$NF == "proxy" {v = $1; sub(/ms$/, "", v); if (v ~ /s$/) {sub(/s$/, "", v); v *= 1000}; print v}')
prof_floor=$(grep -o '[0-9.e+]* floor-ns' "$tmp/prof.txt" | awk '{print $1}')
say "the proxy's goroutines alone (pprof -tagfocus dev=proxy, mode local): $(awk -v ms="$proxy_ms" -v f="$prof_floor" 'BEGIN {ns = ms * 1e6 / 204096; printf "%.0f ns per packet, %.2f × the floor of the same run", ns, ns / f}')"

say
say "== the namespace lab (scripts/lab.sh up)"
run=$(scripts/lab.sh up 2>"$tmp/up.log") || { cat "$tmp/up.log" >&2; exit 1; }
prefix=$(cat "$run/prefix")
labjson() { "$run/bin/labserver" labjson "$run/lab/lab.json" "$@"; }
in_ns() { local n=$1; shift; ip netns exec "$prefix-$n" "$@"; }
pid_of() { cat "$run/pids/$1"; }
# bg NAME ID CMD...: a process in NAME's namespace that lab.sh down stops
# (ip netns exec execs CMD, so $! is CMD's own pid).
bg() {
  local name=$1 id=$2; shift 2
  ip netns exec "$prefix-$name" "$@" >"$run/logs/$id.log" 2>&1 &
  echo "$!" >"$run/pids/$id"
}

perf=$(labjson group 2)   # iperf3 on t3
perf_addr=${perf%:*}; perf_port=${perf##*:}; perf_port=${perf_port%/tcp}
read -r t3_port _ < <(labjson service t3)   # iperf3's own port, for the direct tunnel and the relay
udp=$(labjson group 1)    # UDP echo on t2
udp=${udp%/udp}
t3_home=$(labjson home t3); t2_home=$(labjson home t2)
# IAP ≠ JAP: cl1 (a pias client) to t3. IAP = JAP: a client at t3's home
# proxy (cl2, the plain wireguard-go client, in the generated lab).
far=cl1
[ "$(labjson home cl1)" != "$t3_home" ] || { echo "cl1 shares t3's proxy; the lab changed" >&2; exit 1; }
near=""
for c in cl1 cl2 cl3; do [ "$(labjson home "$c")" = "$t3_home" ] && near=$c; done
[ -n "$near" ] || { echo "no client has t3's proxy $t3_home as its home" >&2; exit 1; }
udp_near="" udp_far=""
for c in cl1 cl3; do
  if [ "$(labjson home "$c")" = "$t2_home" ]; then udp_near=$c; else udp_far=$c; fi
done
say "IAP≠JAP: $far → $(labjson home $far) → $t3_home → t3; IAP=JAP: $near → $t3_home → t3"

# wg_if NS IFNAME PORT PRIVKEY ADDR: a wireguard-go interface on a kernel TUN.
wg_if() {
  local n=$1 ifn=$2 port=$3 key=$4 addr=$5
  echo "$ifn" >>"$run/plain"
  ip netns exec "$prefix-$n" env WG_PROCESS_FOREGROUND=1 "$run/bin/wireguard-go" "$ifn" >"$run/logs/wg-$ifn.log" 2>&1 &
  echo "$!" >"$run/pids/wg-$ifn"
  for _ in $(seq 50); do [ -S "/var/run/wireguard/$ifn.sock" ] && break; sleep 0.1; done
  in_ns "$n" wg set "$ifn" listen-port "$port" private-key <(echo "$key")
  in_ns "$n" ip addr add "$addr" dev "$ifn"
  in_ns "$n" ip link set "$ifn" mtu 1420 up
}
endpoint_ip() { local e; e=$(labjson endpoint "$1"); echo "${e%:*}"; }

# The direct tunnel: cl1 ↔ t3, one wireguard-go each (as lab.sh test's baseline).
ka=$(wg genkey); kb=$(wg genkey); pa=$(wg pubkey <<<"$ka"); pb=$(wg pubkey <<<"$kb")
wg_if "$far" "${prefix}da" 51999 "$ka" 100.127.0.1/32
wg_if t3 "${prefix}db" 51999 "$kb" 100.127.0.2/32
in_ns "$far" wg set "${prefix}da" peer "$pb" endpoint "$(endpoint_ip t3):51999" allowed-ips 100.127.0.0/24
in_ns t3 wg set "${prefix}db" peer "$pa" endpoint "$(endpoint_ip "$far"):51999" allowed-ips 100.127.0.0/24
in_ns "$far" ip route add 100.127.0.0/24 dev "${prefix}da"
in_ns t3 ip route add 100.127.0.0/24 dev "${prefix}db"

# The relay: a namespace of its own on the lab's bridge, one wireguard-go
# interface with cl1 and t3 as peers, and the kernel forwarding between
# them (ip_forward): each packet crosses the relay's TUN twice.
relay_ip=198.18.0.250
ip netns add "$prefix-relay"
echo "$prefix-relay" >>"$run/netns"
ip link add "v${prefix}rl" netns "$prefix-br" type veth peer name eth0 netns "$prefix-relay"
ip -n "$prefix-br" link set "v${prefix}rl" master br0 up
ip -n "$prefix-relay" addr add "$relay_ip/24" dev eth0
ip -n "$prefix-relay" link set eth0 up
ip -n "$prefix-relay" link set lo up
in_ns relay sysctl -qw net.ipv4.ip_forward=1 net.ipv4.conf.all.send_redirects=0 net.ipv4.conf.default.send_redirects=0
kr=$(wg genkey); kc=$(wg genkey); kt=$(wg genkey)
pr=$(wg pubkey <<<"$kr"); pc=$(wg pubkey <<<"$kc"); pt=$(wg pubkey <<<"$kt")
wg_if relay "${prefix}rl" 51997 "$kr" 100.126.0.254/24
in_ns relay sysctl -qw "net.ipv4.conf.${prefix}rl.send_redirects=0"
in_ns relay wg set "${prefix}rl" peer "$pc" allowed-ips 100.126.0.1/32 endpoint "$(endpoint_ip "$far"):51997" \
  peer "$pt" allowed-ips 100.126.0.2/32 endpoint "$(endpoint_ip t3):51997"
wg_if "$far" "${prefix}rc" 51997 "$kc" 100.126.0.1/32
wg_if t3 "${prefix}rt" 51997 "$kt" 100.126.0.2/32
in_ns "$far" wg set "${prefix}rc" peer "$pr" endpoint "$relay_ip:51997" allowed-ips 100.126.0.0/24
in_ns t3 wg set "${prefix}rt" peer "$pr" endpoint "$relay_ip:51997" allowed-ips 100.126.0.0/24
in_ns "$far" ip route add 100.126.0.0/24 dev "${prefix}rc"
in_ns t3 ip route add 100.126.0.0/24 dev "${prefix}rt"
relay_pid=$(pid_of "wg-${prefix}rl")
# A UDP echo on t3 for the round trips through the direct tunnel and the relay.
bg t3 t3-echo "$run/bin/labserver" serve -name t3 -udp :7777

tck=$(getconf CLK_TCK)
# cpu_ticks PID: utime + stime of a process (all its threads), in ticks.
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
# softirq_ticks: the machine's softirq time, all CPUs.
softirq_ticks() { awk '$1 == "cpu" {print $8}' /proc/stat; }
# busy_ticks: the machine's busy time, all CPUs (user, nice, system, irq,
# softirq, steal): every process of the path and the kernel's work for it.
busy_ticks() { awk '$1 == "cpu" {print $2 + $3 + $4 + $7 + $8 + $9}' /proc/stat; }
rss_mb() { awk '/^VmRSS/ {printf "%.0f", $2 / 1024}' "/proc/$1/status"; }

# stream LABEL CLIENT ADDR:PORT P PIDS...: iperf3 for $secs with P streams
# (each held to a rate by $limit, when set: iperf3's "-b BITS");
# prints LABEL Mbit/s, each PID's CPU-s per GB, softirq CPU-s per GB, the
# whole machine's busy CPU-s per GB, and the PIDs' RSS in MB half-way.
stream() {
  local label=$1 client=$2 addr=$3 p=$4; shift 4
  local before=() after=() rss=() s0 s1 b0 b1 pid json
  for pid in "$@"; do before+=("$(cpu_ticks "$pid")"); done
  s0=$(softirq_ticks)
  b0=$(busy_ticks)
  # shellcheck disable=SC2086 # $limit is empty or "-b BITS", two words
  in_ns "$client" iperf3 -c "${addr%:*}" -p "${addr##*:}" -t "$secs" -P "$p" $limit -J >"$tmp/iperf.json" 2>&1 &
  json=$!
  sleep "$(awk -v s="$secs" 'BEGIN {print s / 2 + 0.5}')"
  for pid in "$@"; do rss+=("$(rss_mb "$pid")"); done
  wait "$json" || { echo "iperf3 $label failed: $(head -c 300 "$tmp/iperf.json")" >&2; return 1; }
  s1=$(softirq_ticks)
  b1=$(busy_ticks)
  for pid in "$@"; do after+=("$(cpu_ticks "$pid")"); done
  local bytes sec
  bytes=$(jq '.end.sum_received.bytes' "$tmp/iperf.json")
  sec=$(jq '.end.sum_received.seconds' "$tmp/iperf.json")
  local line="$label $(awk -v b="$bytes" -v s="$sec" 'BEGIN {printf "%.0f", b * 8 / s / 1e6}')"
  local i
  for i in "${!before[@]}"; do
    line+=" $(awk -v t=$((after[i] - before[i])) -v hz="$tck" -v b="$bytes" 'BEGIN {printf "%.2f", t / hz / (b / 1e9)}')"
  done
  line+=" softirq=$(awk -v t=$((s1 - s0)) -v hz="$tck" -v b="$bytes" 'BEGIN {printf "%.2f", t / hz / (b / 1e9)}')"
  line+=" machine=$(awk -v t=$((b1 - b0)) -v hz="$tck" -v b="$bytes" 'BEGIN {printf "%.2f", t / hz / (b / 1e9)}')"
  line+=" rss=$(IFS=/; echo "${rss[*]}")"
  echo "$line"
}

# Warm every path (handshakes, resolution) before measuring.
warm() {
  in_ns "$1" iperf3 -c "${2%:*}" -p "${2##*:}" -t 1 >"$tmp/warm.log" 2>&1 || { echo "warm-up iperf3 $1 → $2 failed: $(tail -3 "$tmp/warm.log")" >&2; exit 1; }
}
warm "$far" "$perf_addr:$perf_port"; warm "$near" "$perf_addr:$perf_port"
warm "$far" "100.127.0.2:$t3_port"; warm "$far" "100.126.0.2:$t3_port"

iap=$(labjson home "$far")
limit=""
# paths KEY P: a stream of P on each path in turn, its lines keyed KEY.
paths() {
  local k=$1 p=$2
  stream "$k direct" "$far" "100.127.0.2:$t3_port" "$p" "$(pid_of "wg-${prefix}da")" "$(pid_of "wg-${prefix}db")" | tee -a "$tmp/streams"
  stream "$k pias-iap≠jap" "$far" "$perf_addr:$perf_port" "$p" "$(pid_of "$iap")" "$(pid_of "$t3_home")" | tee -a "$tmp/streams"
  stream "$k pias-iap=jap" "$near" "$perf_addr:$perf_port" "$p" "$(pid_of "$t3_home")" | tee -a "$tmp/streams"
  stream "$k relay" "$far" "100.126.0.2:$t3_port" "$p" "$relay_pid" | tee -a "$tmp/streams"
}
say
say "== (b)-(d), (f) iperf3, $secs s per run, $rounds rounds (the paths in turn): Mbit/s; CPU-s per GB of each process named; machine softirq per GB; RSS MB half-way"
for p in 1 2 4 8; do for _ in $(seq "$rounds"); do paths "P=$p" "$p"; done; done

# The same at one rate for every path: a proxy's CPU per GB grows as its
# rate falls (its costs per batch, a wakeup and a system call, are shared by
# fewer packets), and unlimited the paths run at different rates.
case $rate in
  *K) rate_bits=$((${rate%K} * 1000)) ;;
  *M) rate_bits=$((${rate%M} * 1000000)) ;;
  *G) rate_bits=$((${rate%G} * 1000000000)) ;;
  *) rate_bits=$rate ;;
esac
say
say "== the same, every path held to $rate bit/s in all (iperf3 -b per stream)"
for p in 1 4; do for _ in $(seq "$rounds"); do
  limit="-b $((rate_bits / p))"
  paths "P=$p@$rate" "$p"
done; done
limit=""

# The median of each figure over the rounds, a line per path and stream
# count, in the lines' own form (rss is the last round's).
awk '
{
  k = $1 " " $2; if (!(k in n)) order[++keys] = k
  n[k]++; nf[k] = NF; rss[k] = $NF
  for (i = 3; i < NF; i++) { v = $i; sub(/^[a-z]+=/, "", v); vals[k, i] = vals[k, i] " " v; pre[k, i] = $i; sub(/[0-9.]+$/, "", pre[k, i]) }
}
END {
  for (x = 1; x <= keys; x++) {
    k = order[x]; line = k
    for (i = 3; i < nf[k]; i++) {
      m = split(substr(vals[k, i], 2), a, " ")
      for (p = 1; p <= m; p++) for (q = p + 1; q <= m; q++) if (a[q] + 0 < a[p] + 0) { t = a[p]; a[p] = a[q]; a[q] = t }
      med = (m % 2) ? a[(m + 1) / 2] : (a[m / 2] + a[m / 2 + 1]) / 2
      line = line " " pre[k, i] sprintf(i == 3 ? "%.0f" : "%.2f", med)
    }
    print line " " rss[k]
  }
}' "$tmp/streams" >"$tmp/medians"
if [ "$rounds" -gt 1 ]; then
  say
  say "== medians over the $rounds rounds"
  cat "$tmp/medians"
fi

say
say "== summary (ratios of the medians over $rounds rounds, within this run; floor = $floor_gb CPU-s/GB)"
awk -v floor="$floor_gb" '
{
  p = $1; path = $2; mbps[p, path] = $3
  if (path == "pias-iap≠jap") { cpu[p, path] = ($4 + $5) / 2; soft[p, path] = $6; proxies[p] = $4 + $5 }
  else if (path == "pias-iap=jap" || path == "relay") { cpu[p, path] = $4; soft[p, path] = $5 }
  else soft[p, path] = $5
  for (i = 4; i <= NF; i++) if ($i ~ /^machine=/) { m = $i; sub(/machine=/, "", m); machine[p, path] = m }
  ps[p] = 1
}
END {
  for (p in ps) {
    sub(/softirq=/, "", soft[p, "relay"]); sub(/softirq=/, "", soft[p, "pias-iap=jap"])
    extra = soft[p, "relay"] - soft[p, "pias-iap=jap"]; if (extra < 0) extra = 0
    relay = cpu[p, "relay"] + extra
    printf "%s throughput vs direct: pias iap≠jap %.2f, pias iap=jap %.2f, relay %.2f   (direct %d Mbit/s)\n", p,
      mbps[p, "pias-iap≠jap"] / mbps[p, "direct"], mbps[p, "pias-iap=jap"] / mbps[p, "direct"], mbps[p, "relay"] / mbps[p, "direct"], mbps[p, "direct"]
    printf "%s CPU per GB / floor: pias proxy iap≠jap %.2f, iap=jap %.2f; relay process %.2f, relay + extra softirq %.2f\n", p,
      cpu[p, "pias-iap≠jap"] / floor, cpu[p, "pias-iap=jap"] / floor, cpu[p, "relay"] / floor, relay / floor
    printf "%s pias proxy / relay CPU per GB: iap≠jap %.2f, iap=jap %.2f (against relay + extra softirq: %.2f, %.2f)\n", p,
      cpu[p, "pias-iap≠jap"] / cpu[p, "relay"], cpu[p, "pias-iap=jap"] / cpu[p, "relay"],
      cpu[p, "pias-iap≠jap"] / relay, cpu[p, "pias-iap=jap"] / relay
    # On a machine whose cores every node of the path shares, throughput is
    # about the cores over the CPU per byte of the whole path (iperf3, the
    # TCP and TUN of the kernel at both ends, every WireGuard device): the two
    # columns agree when the path is CPU-bound, and each proxy adds its own
    # CPU per GB to that of the direct path.
    d = machine[p, "direct"]
    printf "%s whole machine CPU per GB / direct: pias iap≠jap %.2f, iap=jap %.2f, relay %.2f (direct / path throughput: %.2f, %.2f, %.2f)\n", p,
      machine[p, "pias-iap≠jap"] / d, machine[p, "pias-iap=jap"] / d, machine[p, "relay"] / d,
      mbps[p, "direct"] / mbps[p, "pias-iap≠jap"], mbps[p, "direct"] / mbps[p, "pias-iap=jap"], mbps[p, "direct"] / mbps[p, "relay"]
    # What IAP ≠ JAP at half the direct tunnel throughput would take: its
    # whole path at twice the CPU per GB of the direct tunnel. What is not
    # the two proxies (both ends, iperf3, the kernel outside them) stays;
    # the rest is what the proxies could spend.
    if (p !~ /@/) {
      rest = machine[p, "pias-iap≠jap"] - proxies[p]
      budget = (2 * d - rest) / 2
      printf "%s IAP≠JAP at 0.5 of direct needs its path at %.2f CPU-s/GB (2 × direct); the ends, iperf3 and the kernel outside the proxies take %.2f, leaving %.2f per proxy (%.2f × the floor) against %.2f now (%.2f of it)\n", p,
        2 * d, rest, budget, budget / floor, proxies[p] / 2, budget / (proxies[p] / 2)
    }
  }
}' "$tmp/medians" | sort | tee "$tmp/summary"

if command -v perf >/dev/null; then
  # where_cpu CLIENT ADDR:PORT PIDS: perf's call stacks of PIDS (comma
  # apart) during one stream, each sample in the first class it matches;
  # the last line is pias's own share.
  where_cpu() {
    in_ns "$1" iperf3 -c "${2%:*}" -p "${2##*:}" -t $((secs + 2)) >/dev/null 2>&1 &
    local ip3=$!
    sleep 1
    perf record -q -g -F 499 -p "$3" -o "$tmp/perf.data" -- sleep "$secs" >/dev/null 2>&1 || true
    wait "$ip3" || true
    perf script -i "$tmp/perf.data" -F ip,sym 2>/dev/null | awk '
# Each sample of `perf script -F ip,sym` (its call stack, leaf first,
# samples apart by a blank line) goes to the first class it matches.
function flush(   k, i, owner, leafk, all) {
  if (n == 0) return
  total++
  all = ""
  for (i = 1; i <= n; i++) all = all " " sym[i]
  leafk = ip[1] ~ /^ffffffff/
  owner = ""
  for (i = 1; i <= n && owner == ""; i++)
    if (ip[i] !~ /^ffffffff/ && sym[i] !~ /^(runtime\.|sync\.|internal\/|syscall\.|time\.|\[unknown\])/) owner = sym[i]
  if (sym[1] ~ /chacha20poly1305/) k = "cipher (chacha20poly1305)"
  else if (all ~ /runtime\.sysmon/) k = "Go runtime: sysmon (it wakes every 20 µs to 10 ms, and takes the P back from a long system call)"
  else if (all ~ /sendmmsg/) k = "kernel: UDP send, with the receive at the next hop (a veth runs it in the system call of the sender)"
  else if (all ~ /recvmmsg/) k = "kernel: UDP receive"
  else if (leafk && all ~ /futex|epoll|runtime\.(netpoll|usleep|notesleep|futex)/) k = "kernel: threads waiting and woken (futex, epoll)"
  else if (leafk) k = "kernel: other (interrupts, preemption, page faults)"
  else if (owner ~ /pias-net/) k = "pias: router, MemTUN and its two copies, gate, SideBind, rawbind and its GRO split"
  else if (sym[1] ~ /runtime\.mem(move|clr)/ && owner ~ /StdNetBind/) k = "wireguard-go: StdNetBind GSO and GRO copies (coalescing, splitting)"
  else if (owner ~ /zx2c4|golang\.org\/x\/net/) k = "wireguard-go: its pipeline (queues, pools, allowed IPs, timers)"
  else if (all ~ /runtime\.(schedule|findRunnable|park_m|mcall|stopm|startm|wakep)/) k = "Go scheduler: goroutine switches"
  else k = "the rest (Go runtime: collector, allocation)"
  c[k]++
  if (k ~ /^pias/) pias++
  n = 0
}
/^[ \t]*$/ { flush(); next }
{ n++; ip[n] = $1; sym[n] = $2 }
END {
  flush()
  if (total == 0) exit
  for (k in c) printf "  %5.1f%%  %s\n", 100 * c[k] / total, k
  printf "PIAS_SHARE %.4f\n", pias / total
}
'
  }
  say
  say "== where the proxies' CPU goes during one stream (perf record -g, $secs s; each sample by its call stack)"
  where_cpu "$far" "$perf_addr:$perf_port" "$(pid_of "$iap"),$(pid_of "$t3_home")" >"$tmp/where-far"
  say "-- IAP≠JAP, $iap and $t3_home together:"
  grep -v PIAS_SHARE "$tmp/where-far" | sort -rn
  where_cpu "$near" "$perf_addr:$perf_port" "$(pid_of "$t3_home")" >"$tmp/where-near"
  say "-- IAP=JAP, $t3_home:"
  grep -v PIAS_SHARE "$tmp/where-near" | sort -rn
  # Were pias's own code free, what would the IAP≠JAP proxies cost, next
  # to what half the direct tunnel's throughput needs (the summary)?
  share=$(awk '$1 == "PIAS_SHARE" {print $2}' "$tmp/where-far")
  now=$(awk '$1 == "P=1" && $2 == "pias-iap≠jap" {print ($4 + $5) / 2}' "$tmp/medians")
  need=$(awk '$1 == "P=1" && /at 0.5 of direct/ {for (i = 1; i < NF; i++) if ($i == "leaving") print $(i + 1)}' "$tmp/summary")
  if [ -n "$share" ] && [ -n "$now" ] && [ -n "$need" ]; then
    say "P=1 IAP≠JAP: with none of pias's own code (its $(awk -v s="$share" 'BEGIN {printf "%.1f", 100 * s}') %), a proxy would still cost $(awk -v n="$now" -v s="$share" 'BEGIN {printf "%.2f", n * (1 - s)}') CPU-s/GB of its $now; 0.5 of direct needs $need"
  fi
fi

say
say "== (e) round trips of 32-byte UDP requests, 2000 one at a time: answered, median µs, p99 µs"
rtt() { in_ns "$1" "$run/bin/labserver" rtt-udp "$2" 2000; }
direct_rtt=$(rtt "$far" 100.127.0.2:7777); say "direct wireguard-go ($far → t3): $direct_rtt"
relay_rtt=$(rtt "$far" 100.126.0.2:7777); say "relay ($far → relay → t3): $relay_rtt"
near_rtt=$(rtt "$udp_near" "$udp"); say "pias IAP=JAP ($udp_near → $t2_home → t2, 1 hop): $near_rtt"
far_rtt=$(rtt "$udp_far" "$udp"); say "pias IAP≠JAP ($udp_far → $(labjson home "$udp_far") → $t2_home → t2, 2 hops): $far_rtt"
read -r _ dm d99 <<<"$direct_rtt"; read -r _ rm r99 <<<"$relay_rtt"
read -r _ nm n99 <<<"$near_rtt"; read -r _ fm f99 <<<"$far_rtt"
say "added per hop over direct, median/p99 µs: pias IAP=JAP $((nm - dm))/$((n99 - d99)), pias IAP≠JAP $(((fm - dm) / 2))/$(((f99 - d99) / 2)), relay $((rm - dm))/$((r99 - d99))"
say "median RTT / direct: pias IAP=JAP $(per "$dm" "$nm"), pias IAP≠JAP $(per "$dm" "$fm"), relay $(per "$dm" "$rm")"
# The ends of the pias paths are pias nodes, not the direct tunnel's plain
# wireguard-go: a proxy more on the same kind of path is the other measure.
say "a proxy more on the path (IAP≠JAP over IAP=JAP), added round trip, median/p99 µs: $((fm - nm))/$((f99 - n99))"

say
say "== proxies' RSS after the load (MB, VmRSS / VmHWM peak)"
for n in $(labjson names proxy); do
  say "$n $(rss_mb "$(pid_of "$n")") / $(awk '/^VmHWM/ {printf "%.0f", $2 / 1024}' "/proc/$(pid_of "$n")/status")"
done
say "relay wireguard-go $(rss_mb "$relay_pid") / $(awk '/^VmHWM/ {printf "%.0f", $2 / 1024}' "/proc/$relay_pid/status")"
