#!/usr/bin/env bash
# The network-namespace lab: every pias node in its own network namespace
# with a real kernel TUN (edges) and real programs (curl, ping, iperf3, wg),
# joined through a bridge namespace on the benchmark range 198.18.0.0/24.
# Nothing outside the lab's own namespaces is ever addressed. Linux, root.
#
#   scripts/lab.sh test [--driver tun|water] [--delay]   a CA lab: up, check everything, sign in a new
#                                                         target, revoke it; then a static lab for the
#                                                         plain WireGuard client; down (always)
#   scripts/lab.sh up   [--driver tun|water] [--delay] [--static]
#                                                         build and start (a CA lab unless --static);
#                                                         prints the run directory
#   scripts/lab.sh down [RUNDIR]                          stop and remove a run (default: the last one)
#   scripts/lab.sh bench                                  iperf3 through pias vs a direct wireguard-go
#                                                         tunnel, for both drivers
#   scripts/lab.sh chaos [--driver tun|water]             while a client sends requests: SIGKILL its
#                                                         proxy, restart it, cut a proxy's link, stop
#                                                         and start the HTTP service that answers it;
#                                                         count failed requests and the longest gap
#
# Every name a run creates (namespaces, links, interfaces, UAPI sockets)
# carries the run's prefix, so two runs never collide and down removes
# exactly what up made.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/.." && pwd)
state_root=${PIAS_LAB_ROOT:-/tmp/pias-lab}
last_link="$state_root/last"

log() { printf '[lab %s] %s\n' "$(date +%T)" "$*" >&2; }
die() { log "FAIL: $*"; exit 1; }

need() {
  for c in "$@"; do command -v "$c" >/dev/null || die "$c is not installed (see .ci/run for the packages)"; done
}

# ---------------------------------------------------------------- up / down

up() {
  local driver=tun delay=0 targets=3 mode=""
  while [ $# -gt 0 ]; do
    case $1 in
      --driver) driver=$2; shift 2 ;;
      --delay) delay=1; shift ;;
      --targets) targets=$2; shift 2 ;;
      --static) mode=--static; shift ;;
      *) die "up: unknown argument $1" ;;
    esac
  done
  [ "$(id -u)" = 0 ] || die "the lab needs root (network namespaces)"
  need ip go curl ping iperf3 wg wg-quick
  mkdir -p "$state_root"
  local prefix="pl$(head -c2 /dev/urandom | od -An -tx1 | tr -d ' \n')"
  run="$state_root/$prefix"
  mkdir -p "$run/bin" "$run/logs" "$run/pids"
  echo "$prefix" >"$run/prefix"
  echo "$driver" >"$run/driver"
  echo "$delay" >"$run/delay"
  ln -sfn "$run" "$last_link"
  local kind="CA lab"
  [ -n "$mode" ] && kind="static lab"
  log "run $prefix in $run (driver $driver, $kind)"

  (cd "$repo" && go build -o "$run/bin/pias" ./cmd/pias && go build -o "$run/bin/labserver" ./scripts/labserver &&
    go build -o "$run/bin/wireguard-go" golang.zx2c4.com/wireguard)

  # 3 proxies in 2 clusters, 3 targets (one per group), 3 clients running
  # pias. A CA lab (lab gen's default): every node has a certificate of the
  # lab's CA, and files list only the proxies' endpoints. A static lab
  # (--static): cl2 is a plain WireGuard client (wireguard-go + wg), the
  # README's cl2, which a proxy admits by its [[edge]] entry. chaos adds t4,
  # a second HTTP target of t1's group.
  "$run/bin/pias" lab gen --out "$run/lab" $mode --proxies 3 --clusters 2 --targets "$targets" --clients 3 --groups 3 \
    --underlay 198.18.0.0/24 --interface "$driver" --ifprefix "$prefix" >/dev/null

  local br="$prefix-br"
  ip netns add "$br"
  echo "$br" >>"$run/netns"
  ip -n "$br" link add br0 type bridge
  ip -n "$br" link set br0 up
  ip -n "$br" link set lo up

  local name addr
  while read -r name addr cluster; do
    add_ns "$name" "$addr" "$cluster"
  done < <(labjson nodes)

  # Proxies first, then targets with their services, then clients.
  for name in $(labjson names proxy); do
    start "$name" "$run/bin/pias" proxy -c "$run/lab/$name.toml"
  done
  for name in $(labjson names proxy); do
    wait_log "$name" "up:"
  done
  for name in $(labjson names target); do
    local port proto
    read -r port proto < <(labjson service "$name")
    if [ "$proto" = udp ]; then
      start "$name-svc" "$run/bin/labserver" serve -name "$name" -udp ":$port"
    elif [ "$name" = t3 ]; then
      start "$name-svc" iperf3 -s -p "$port"
    else
      start "$name-svc" "$run/bin/labserver" serve -name "$name" -http ":$port"
    fi
    start "$name" "$run/bin/pias" target -c "$run/lab/$name.toml"
  done
  for name in cl1 cl3; do
    start "$name" "$run/bin/pias" client -c "$run/lab/$name.toml"
  done
  if [ -e "$run/lab/cl2.wg.conf" ]; then
    plain_client cl2
  else
    start cl2 "$run/bin/pias" client -c "$run/lab/cl2.toml"
    wait_log cl2 "up:"
  fi
  for name in $(labjson names target) cl1 cl3; do
    wait_log "$name" "up:"
  done
  log "lab up"
  echo "$run"
}

# add_ns NAME ADDR [CLUSTER]: NAME's namespace, on the bridge at ADDR/24
# (with --delay, 2 ms away in cluster c1, 10 ms elsewhere).
add_ns() {
  local name=$1 addr=$2 cluster=${3:-} prefix br ns
  prefix=$(cat "$run/prefix")
  br="$prefix-br"
  ns="$prefix-$name"
  ip netns add "$ns"
  echo "$ns" >>"$run/netns"
  ip -n "$ns" link set lo up
  ip link add "v$prefix$name" netns "$br" type veth peer name eth0 netns "$ns"
  ip -n "$br" link set "v$prefix$name" master br0 up
  ip -n "$ns" addr add "$addr/24" dev eth0
  ip -n "$ns" link set eth0 up
  if [ "$(cat "$run/delay")" = 1 ]; then
    # "Near" and "far": cluster c1 is 2 ms from the bridge, everything else 10 ms.
    local ms=10
    [ "$cluster" = c1 ] && ms=2
    ip netns exec "$br" tc qdisc add dev "v$prefix$name" root netem delay "${ms}ms" 2>/dev/null ||
      die "--delay needs tc netem, which this kernel lacks (module sch_netem)"
  fi
}

# start NAME CMD... runs CMD in NAME's namespace (NAME-svc runs in NAME's too).
start() {
  local name=$1; shift
  local ns="$(cat "$run/prefix")-${name%-svc}"
  ip netns exec "$ns" "$@" >"$run/logs/$name.log" 2>&1 &
  echo "$!" >"$run/pids/$name"
}

wait_log() {
  local name=$1 pattern=$2
  for _ in $(seq 100); do
    grep -q "$pattern" "$run/logs/$name.log" 2>/dev/null && return 0
    kill -0 "$(cat "$run/pids/$name")" 2>/dev/null || { cat "$run/logs/$name.log" >&2; die "$name exited"; }
    sleep 0.1
  done
  cat "$run/logs/$name.log" >&2
  die "$name did not come up"
}

# plain_client NAME: the official userspace WireGuard with the wg-quick file
# that lab gen wrote, and no pias code at all, set up by the README's block
# of commands (section "Plain WireGuard clients") word for word: run from
# the lab directory, with this run's wireguard-go first on PATH and the
# README's interface name wg0 replaced by the run's (names carry the run's
# prefix). lab/gen_test.go checks that block against lab gen's files.
plain_client() {
  local name=$1 prefix ns ifname block
  prefix=$(cat "$run/prefix")
  ns="$prefix-$name"
  ifname="$prefix$name"
  echo "$ifname" >>"$run/plain"
  block=$("$run/bin/labserver" readme-block "$repo/README.md" plain-wireguard-go) || die "README: no plain client block"
  block=$(sed "s/\bwg0\b/$ifname/g" <<<"$block")
  log "plain client $name: the README's commands"$'\n'"$block"
  (cd "$run/lab" && ip netns exec "$ns" env PATH="$run/bin:$PATH" LOG_LEVEL=error bash -euo pipefail -c "$block") \
    >"$run/logs/$name.log" 2>&1 || { cat "$run/logs/$name.log" >&2; die "$name: the README's plain client commands failed"; }
  # wireguard-go forked into the background: the namespace's one process.
  ip netns pids "$ns" | head -1 >"$run/pids/$name"
  [ -s "$run/pids/$name" ] || die "$name: wireguard-go is not running"
}

# wg_quick_client NAME: NAME's plain client again, now by `wg-quick up` of
# the same file with the userspace implementation, checked with curl and
# UDP, then `wg-quick down`. The file is copied under the run's prefix, as
# wg-quick names the interface after the file.
wg_quick_client() {
  local name=$1 prefix conf pid failed=0 out http_group udp_group
  prefix=$(cat "$run/prefix")
  pid=$(cat "$run/pids/$name")
  in_ns "$name" ip link delete "$prefix$name"
  for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  kill -0 "$pid" 2>/dev/null && { log "FAILED: $name: wireguard-go did not stop with its interface"; return 1; }
  mkdir -p "$run/wg-quick"
  conf="$run/wg-quick/$prefix$name.conf"
  cp -p "$run/lab/$name.wg.conf" "$conf"
  in_ns "$name" env WG_QUICK_USERSPACE_IMPLEMENTATION="$run/bin/wireguard-go" wg-quick up "$conf" \
    >"$run/logs/$name-wg-quick.log" 2>&1 || { cat "$run/logs/$name-wg-quick.log" >&2; log "FAILED: wg-quick up"; return 1; }
  ip netns pids "$prefix-$name" | head -1 >"$run/pids/$name"
  http_group=$(labjson group 0); udp_group=$(labjson group 1)
  out=$(in_ns "$name" curl -sS --max-time 10 --retry 3 --retry-all-errors "http://${http_group%/tcp}/hello") || out="no answer"
  case $out in
    t1:*) log "ok: $name by wg-quick: curl ${http_group%/tcp} → $out" ;;
    *) log "FAILED: $name by wg-quick: curl ${http_group%/tcp} → $out"; failed=1 ;;
  esac
  out=$(in_ns "$name" "$run/bin/labserver" ask-udp "${udp_group%/udp}" "hello from $name") || out="no answer"
  if [ "$out" = "t2: hello from $name" ]; then
    log "ok: $name by wg-quick: UDP ${udp_group%/udp} → $out"
  else
    log "FAILED: $name by wg-quick: UDP ${udp_group%/udp} → $out"; failed=1
  fi
  if in_ns "$name" wg-quick down "$conf" >>"$run/logs/$name-wg-quick.log" 2>&1; then
    rm -f "$run/pids/$name"
  else
    log "FAILED: wg-quick down"; failed=1
  fi
  return $failed
}

down() {
  local target=${1:-}
  if [ -z "$target" ]; then
    [ -e "$last_link" ] || { log "nothing to take down"; return 0; }
    target=$(readlink -f "$last_link")
  fi
  [ -d "$target" ] || { log "no run at $target"; return 0; }
  run=$target
  local prefix
  prefix=$(cat "$run/prefix")
  log "taking down $prefix"
  # SIGTERM first so nodes remove what they added, then make sure.
  for f in "$run"/pids/*; do [ -e "$f" ] && kill -TERM "$(cat "$f")" 2>/dev/null || true; done
  for _ in $(seq 50); do
    local alive=0
    for f in "$run"/pids/*; do [ -e "$f" ] && kill -0 "$(cat "$f")" 2>/dev/null && alive=1; done
    [ $alive = 0 ] && break
    sleep 0.1
  done
  for f in "$run"/pids/*; do [ -e "$f" ] && kill -KILL "$(cat "$f")" 2>/dev/null || true; done
  if [ -e "$run/netns" ]; then
    tac "$run/netns" | while read -r ns; do ip netns del "$ns" 2>/dev/null || true; done
  fi
  rm -f /var/run/wireguard/"$prefix"*.sock /var/run/pias/"$prefix"*.sock
  # PIAS_LAB_LOGS=DIR keeps the run's logs (node output, request streams).
  if [ -n "${PIAS_LAB_LOGS:-}" ]; then
    mkdir -p "$PIAS_LAB_LOGS" && cp -r "$run/logs" "$PIAS_LAB_LOGS/$prefix" && log "logs kept in $PIAS_LAB_LOGS/$prefix"
  fi
  rm -rf "$run"
  [ "$(readlink -f "$last_link" 2>/dev/null)" = "$target" ] && rm -f "$last_link"
  log "down"
}

# labjson QUERY...: facts from lab.json, read by the lab package itself
# (nodes | names ROLE | service NAME | group I | endpoint NAME | home NAME).
labjson() {
  "$run/bin/labserver" labjson "$run/lab/lab.json" "$@"
}

# ---------------------------------------------------------------- checks

in_ns() { local name=$1; shift; ip netns exec "$(cat "$run/prefix")-$name" "$@"; }

ok() { log "ok: $*"; }
bad() { log "FAILED: $*"; failed=1; }

# check_clients CLIENT...: curl, a UDP exchange and (but cl3) ping from
# each client.
check_clients() {
  local failed=0
  local http_group udp_group
  http_group=$(labjson group 0)   # 100.65.0.1:80/tcp, served by t1
  udp_group=$(labjson group 1)    # 100.65.0.1:53/udp, served by t2
  local http_addr=${http_group%/tcp} udp_addr=${udp_group%/udp}

  for c in "$@"; do
    local out
    if out=$(in_ns "$c" curl -sS --max-time 10 --retry 3 --retry-all-errors "http://$http_addr/hello"); then
      case $out in t1:*) ok "$c curl $http_addr → $out" ;; *) bad "$c curl answered '$out', not t1" ;; esac
    else
      bad "$c curl http://$http_addr/ failed"
    fi
  done
  for c in "$@"; do
    local out
    if out=$(in_ns "$c" "$run/bin/labserver" ask-udp "$udp_addr" "hello from $c"); then
      [ "$out" = "t2: hello from $c" ] && ok "$c UDP $udp_addr → $out" || bad "$c UDP answered '$out'"
    else
      bad "$c UDP to $udp_addr got no answer"
    fi
  done
  for c in "$@"; do
    [ "$c" = cl3 ] && continue
    if in_ns "$c" ping -c 3 -i 0.2 -W 2 "${http_addr%:*}" >/dev/null; then
      ok "$c ping ${http_addr%:*}"
    else
      bad "$c ping ${http_addr%:*} failed"
    fi
  done
  return $failed
}

# check: every client's requests, an iperf3 stream, and wg show.
check() {
  local failed=0
  check_clients cl1 cl2 cl3 || failed=1
  local perf_group
  perf_group=$(labjson group 2)   # 100.65.0.2:80/tcp, iperf3 on t3
  local perf_addr=${perf_group%/tcp}
  local mbps
  if mbps=$(iperf cl1 "${perf_addr%:*}" "${perf_addr##*:}"); then
    ok "cl1 iperf3 → $perf_group: $mbps Mbit/s"
    echo "$mbps" >"$run/iperf-anycast"
  else
    bad "iperf3 through $perf_group failed"
  fi
  # wg show in a proxy's namespace: its peers, with traffic counted.
  local p1if
  p1if="$(cat "$run/prefix")p1"
  local transfer
  if transfer=$(in_ns p1 wg show "$p1if" transfer) && [ -n "$transfer" ] &&
    awk '$2 > 0 && $3 > 0 {n++} END {exit !(n > 0)}' <<<"$transfer"; then
    ok "wg show $p1if: $(wc -l <<<"$transfer") peers, $(awk '$2 > 0 {n++} END {print n+0}' <<<"$transfer") with traffic"
  else
    bad "wg show $p1if shows no peers with traffic"
  fi
  return $failed
}

# iperf CLIENT ADDR PORT → Mbit/s of a 3 s stream.
iperf() {
  local out
  out=$(in_ns "$1" iperf3 -c "$2" -p "$3" -t 3 -f m) || return 1
  awk '/receiver/ {print $(NF-2); exit}' <<<"$out"
}

# direct_baseline: one wireguard-go tunnel between cl1's and t3's namespaces
# over the same underlay, with iperf3 through it, in the same run.
direct_baseline() {
  local prefix ka kb pa pb a_if b_if a_ip b_ip
  prefix=$(cat "$run/prefix")
  a_if="${prefix}da"; b_if="${prefix}db"
  a_ip=$(labjson endpoint cl1); b_ip=$(labjson endpoint t3)
  a_ip=${a_ip%:*}; b_ip=${b_ip%:*}
  ka=$(wg genkey); kb=$(wg genkey)
  pa=$(wg pubkey <<<"$ka"); pb=$(wg pubkey <<<"$kb")
  echo "$a_if" >>"$run/plain"; echo "$b_if" >>"$run/plain"
  in_ns cl1 env WG_PROCESS_FOREGROUND=1 "$run/bin/wireguard-go" "$a_if" >"$run/logs/direct-a.log" 2>&1 &
  echo "$!" >"$run/pids/direct-a"
  in_ns t3 env WG_PROCESS_FOREGROUND=1 "$run/bin/wireguard-go" "$b_if" >"$run/logs/direct-b.log" 2>&1 &
  echo "$!" >"$run/pids/direct-b"
  for _ in $(seq 50); do [ -S "/var/run/wireguard/$a_if.sock" ] && [ -S "/var/run/wireguard/$b_if.sock" ] && break; sleep 0.1; done
  in_ns cl1 wg set "$a_if" listen-port 51999 private-key <(echo "$ka") peer "$pb" endpoint "$b_ip:51999" allowed-ips 100.127.0.2/32
  in_ns t3 wg set "$b_if" listen-port 51999 private-key <(echo "$kb") peer "$pa" endpoint "$a_ip:51999" allowed-ips 100.127.0.1/32
  in_ns cl1 ip addr add 100.127.0.1/32 dev "$a_if"; in_ns cl1 ip link set "$a_if" mtu 1420 up
  in_ns cl1 ip route add 100.127.0.2/32 dev "$a_if"
  in_ns t3 ip addr add 100.127.0.2/32 dev "$b_if"; in_ns t3 ip link set "$b_if" mtu 1420 up
  in_ns t3 ip route add 100.127.0.1/32 dev "$b_if"
  local port
  read -r port _ < <(labjson service t3)
  iperf cl1 100.127.0.2 "$port"
}

# ---------------------------------------------------------------- CA mode

# ca_new_target: what README "Adding a node" tells a person to do, in the
# running CA lab: a key, a certificate from the lab's CA (pias cert sign),
# a file that names the CA, the certificate and one proxy's endpoint, and
# nothing else; no proxy's file changes. Then start it and curl its group
# from cl1 until it answers. Prints the new target's name (stdout).
ca_new_target() {
  local n name lab bin prefix addr group=100.65.0.3:80/tcp started out took p1
  n=$(( $(labjson names target | wc -l) + 1 ))
  name=t$n
  lab="$run/lab"; bin="$run/bin/pias"; prefix=$(cat "$run/prefix")
  addr=198.18.0.$(( $(labjson nodes | wc -l) + 1 ))
  p1=$(labjson endpoint p1)
  (umask 077 && "$bin" genkey >"$lab/$name.key")
  "$bin" cert sign --ca "$lab" --name "$name" --role target --pubkey "$("$bin" pubkey <"$lab/$name.key")" \
    --address "100.64.1.$n" --groups "$group" --out "$lab/$name.crt" >&2 || { log "FAILED: pias cert sign $name"; return 1; }
  cat >"$lab/$name.toml" <<EOF
# a target added to the running lab: README, "Adding a node"
name = "$name"
private_key_file = "$name.key"
listen = "$addr:51820"
ca_file = "ca.pem"
cert_file = "$name.crt"
interface = "$(cat "$run/driver")"
interface_name = "$prefix$name"

[[proxy]]
endpoint = "$p1"

[[group]]
group = "$group"
port = 8080
EOF
  add_ns "$name" "$addr"
  start "$name-svc" "$run/bin/labserver" serve -name "$name" -http ":8080"
  started=$(date +%s.%N)
  start "$name" "$bin" target -c "$lab/$name.toml"
  out=""
  for _ in $(seq 200); do
    out=$(in_ns cl1 curl -sS --max-time 1 "http://${group%/tcp}/hello" 2>/dev/null) || out=""
    case $out in "$name":*) break ;; esac
    kill -0 "$(cat "$run/pids/$name")" 2>/dev/null || { cat "$run/logs/$name.log" >&2; log "FAILED: $name exited"; return 1; }
    sleep 0.05
  done
  took=$(awk -v s="$started" -v e="$(date +%s.%N)" 'BEGIN {printf "%.2f", e - s}')
  case $out in
    "$name":*) log "ok: new target $name (signed into the running lab; its file lists p1's endpoint only): cl1 curl ${group%/tcp} → $out, $took s after it started" ;;
    *) cat "$run/logs/$name.log" >&2; log "FAILED: new target $name: no answer from ${group%/tcp} within $took s"; return 1 ;;
  esac
  echo "$name"
}

# ca_revoke NAME: pias cert revoke NAME's certificate (the lab's
# revoked.pem, next serial), SIGHUP to p1 alone, and wait until every
# proxy that admitted NAME has removed it and cl1's requests to its group
# go unanswered; both timed from the revoke.
ca_revoke() {
  local name=$1 lab="$run/lab" bin="$run/bin/pias" group=100.65.0.3:80/tcp admitted=() started p all=0 t_removed t_silent out
  for p in $(labjson names proxy); do
    grep -q " edge-admitted $name " "$run/logs/$p.log" && admitted+=("$p")
  done
  [ ${#admitted[@]} -gt 0 ] || { log "FAILED: no proxy logged admitting $name"; return 1; }
  started=$(date +%s.%N)
  "$bin" cert revoke --ca "$lab" "$lab/$name.crt" >&2 || { log "FAILED: pias cert revoke $name"; return 1; }
  kill -HUP "$(cat "$run/pids/p1")"
  for _ in $(seq 500); do
    all=1
    for p in "${admitted[@]}"; do grep -q " edge-removed $name " "$run/logs/$p.log" || all=0; done
    [ $all = 1 ] && break
    kill -0 "$(cat "$run/pids/p1")" 2>/dev/null || { log "FAILED: p1 exited on SIGHUP"; return 1; }
    sleep 0.02
  done
  t_removed=$(awk -v s="$started" -v e="$(date +%s.%N)" 'BEGIN {printf "%.2f", e - s}')
  [ $all = 1 ] || { log "FAILED: revoked $name: not removed by every one of ${admitted[*]} within $t_removed s"; return 1; }
  out=""
  for _ in $(seq 100); do
    out=$(in_ns cl1 curl -sS --max-time 1 "http://${group%/tcp}/hello" 2>/dev/null) || { out=""; break; }
    sleep 0.05
  done
  t_silent=$(awk -v s="$started" -v e="$(date +%s.%N)" 'BEGIN {printf "%.2f", e - s}')
  [ -z "$out" ] || { log "FAILED: revoked $name still answers cl1: $out"; return 1; }
  log "ok: revoked $name (pias cert revoke, SIGHUP to p1): every proxy that admitted it (${admitted[*]}) removed it $t_removed s after the revoke; cl1's requests to ${group%/tcp} unanswered $t_silent s after"
}

# ---------------------------------------------------------------- commands

cmd=${1:-}
[ $# -gt 0 ] && shift
case $cmd in
  up) up "$@" ;;
  down) down "$@" ;;
  test)
    run=""
    trap 'rc=$?; [ -n "${run:-}" ] && down "$run"; exit $rc' EXIT
    # A CA lab (lab gen's default): every check, a target signed in while
    # it runs, its revocation, and the direct baseline.
    up "$@" >/dev/null
    check || die "some checks failed (PIAS_LAB_LOGS=DIR keeps the logs)"
    new=$(ca_new_target) || die "a target added to the running CA lab failed"
    ca_revoke "$new" || die "the revocation of $new failed"
    if direct=$(direct_baseline); then
      log "ok: direct wireguard-go tunnel cl1 → t3: $direct Mbit/s"
      anycast=$(cat "$run/iperf-anycast")
      log "iperf3: through pias $anycast Mbit/s, direct wireguard-go $direct Mbit/s, ratio $(awk -v a="$anycast" -v d="$direct" 'BEGIN {printf "%.2f", a / d}')"
    else
      die "direct wireguard-go baseline failed"
    fi
    down "$run"
    # A plain WireGuard client has no certificate: a proxy admits it by
    # its [[edge]] entry, so the README's cl2 runs in a static lab.
    run=""
    up --static "$@" >/dev/null
    check_clients cl2 || die "the plain client's checks failed"
    wg_quick_client cl2 || die "the plain client by wg-quick failed"
    log "all checks passed"
    ;;
  chaos)
    run=""
    trap 'rc=$?; [ -n "${run:-}" ] && down "$run"; exit $rc' EXIT
    # t4 serves t1's group too: where a service stops, its group has
    # another target to move to. A static lab: the faults are aimed at the
    # homes lab.json names, which in a CA lab are where an edge goes only
    # if that proxy admits it first.
    up --static --targets 4 "$@" >/dev/null
    http_group=$(labjson group 0)
    url="http://${http_group%/tcp}/chaos"
    iap=$(labjson home cl1)
    jap=$(labjson home t1)
    worst=0
    # phase NAME SECONDS: a request every 100 ms from cl1 (500 ms timeout
    # each) while the caller's faults happen; then its failures and the
    # longest time without an answer.
    phase_start() {
      in_ns cl1 "$run/bin/labserver" hammer "$url" "$2s" 100ms >"$run/logs/hammer-$1.log" 2>&1 &
      hammer=$!
      phase=$1
    }
    # phase_end [own]: with own, the phase's gap has its own bound (it is
    # left in $failures and $gap), not the failover one.
    phase_end() {
      wait "$hammer" || true
      local summary requests
      failures="" gap=""
      summary=$(cat "$run/logs/hammer-$phase.log")
      read -r _ requests _ failures _ gap <<<"$summary"
      [ -n "${gap:-}" ] || die "$phase: the request stream did not report"
      log "chaos $phase: $failures of $requests requests failed, longest gap $gap ms"
      [ "${1:-}" = own ] && return 0
      [ "$gap" -gt "$worst" ] && worst=$gap
      return 0
    }
    phase_start iap-sigkill 10
    sleep 2
    log "SIGKILL $iap (cl1's proxy, its IAP)"
    kill -KILL "$(cat "$run/pids/$iap")"
    phase_end
    phase_start iap-restart 8
    sleep 1
    log "restart $iap"
    start "$iap" "$run/bin/pias" proxy -c "$run/lab/$iap.toml"
    wait_log "$iap" "up:"
    phase_end
    phase_start jap-link-cut 14
    sleep 2
    log "cut $jap's link (t1's proxy, its JAP)"
    cut=$(date +%s.%N)
    in_ns "$jap" ip link set eth0 down
    sleep 6
    # When did t1 join again through another proxy? (its log's last join)
    rejoin=$(awk '/ joined / {t=$2} END {print t}' "$run/logs/t1.log")
    if [ -n "$rejoin" ]; then
      # Both times are of this machine's clock, in its local time zone.
      log "chaos: t1 joined again through another proxy $(awk -v c="$cut" -v r="$rejoin" 'BEGIN {
        split(r, a, ":"); s = a[1]*3600 + a[2]*60 + a[3]
        split(strftime("%H:%M:%S", int(c)), b, ":"); cs = b[1]*3600 + b[2]*60 + b[3] + (c - int(c))
        printf "%.2f", s - cs }') s after its JAP's link was cut"
    fi
    log "heal $jap's link"
    in_ns "$jap" ip link set eth0 up
    phase_end
    # Stop the HTTP service (the process, not pias) of the target that
    # answers cl1. Its check (tcp, every 2 s, fall 3) fails within 6 s and
    # the target drains the group; from the next update the group's other
    # target takes cl1's new flows. Requests in that window may fail; the
    # bound allows it and one update more (PIAS_CHAOS_SERVICE_MAX_GAP_MS).
    answer=$(in_ns cl1 curl -sS --max-time 5 --retry 5 --retry-all-errors "$url") || die "cl1: no answer before service-stop"
    victim=${answer%%:*}
    [ -e "$run/pids/$victim-svc" ] || die "cl1 is answered by '$victim', not a target with a service"
    read -r vport _ < <(labjson service "$victim")
    phase_start service-stop 14
    sleep 2
    log "stop $victim's HTTP service (pid $(cat "$run/pids/$victim-svc"), answers cl1)"
    kill -TERM "$(cat "$run/pids/$victim-svc")"
    for _ in $(seq 50); do kill -0 "$(cat "$run/pids/$victim-svc")" 2>/dev/null || break; sleep 0.1; done
    phase_end own
    svc_failures=$failures svc_gap=$gap
    # 12 s after the stop: the group has moved; no request may fail now.
    phase_start service-down 3
    phase_end own
    [ "$failures" = 0 ] || die "service-stop: $failures requests failed after the detection window"
    if out=$(in_ns cl1 curl -sS --max-time 2 "$url") && [ "${out%%:*}" != "$victim" ]; then
      log "ok: cl1 is answered by ${out%%:*} while $victim's service is down"
    else
      die "cl1 is not answered by another target while $victim's service is down (got '${out:-nothing}')"
    fi
    # Start it again: after rise (2 passes, 2 s apart) and one update the
    # target joins again and cl1, whose hash picks it, comes back to it.
    phase_start service-start 10
    log "start $victim's HTTP service again"
    start "$victim-svc" "$run/bin/labserver" serve -name "$victim" -http ":$vport"
    back=""
    for _ in $(seq 100); do
      out=$(in_ns cl1 curl -sS --max-time 1 "$url" 2>/dev/null) || out=""
      [ "${out%%:*}" = "$victim" ] && { back=1; break; }
      sleep 0.1
    done
    phase_end own
    [ -n "$back" ] || die "service-start: $victim did not answer cl1 again within 10 s of its service's start"
    log "ok: $victim answers cl1 again after its check rose"
    [ "$failures" = 0 ] || die "service-start: $failures requests failed while $victim's service came back"
    [ "$svc_gap" -le "${PIAS_CHAOS_SERVICE_MAX_GAP_MS:-10000}" ] || die "service-stop: longest gap ${svc_gap} ms"
    log "ok: service-stop: longest gap $svc_gap ms ($svc_failures requests failed), within ${PIAS_CHAOS_SERVICE_MAX_GAP_MS:-10000} ms"
    # Delivery must resume after every fault, by failover: the fallback
    # timers (IAP cache 10 s, target timeout 15 s, WireGuard 15 s) would
    # leave gaps well over the bound.
    [ "$worst" -le "${PIAS_CHAOS_MAX_GAP_MS:-6000}" ] || die "longest gap ${worst} ms"
    log "chaos passed: longest gap $worst ms"
    ;;
  bench)
    for d in tun water; do
      "$0" test --driver "$d" 2>&1 | grep -E 'iperf3:|FAIL' | sed "s/^/[$d] /"
    done
    ;;
  *)
    sed -n '2,16p' "$0" | sed 's/^# \{0,1\}//'
    [ -z "$cmd" ] && exit 2
    [ "$cmd" = -h ] || [ "$cmd" = --help ] || exit 2
    ;;
esac
