#!/usr/bin/env bash
# Runs pias's benchmarks and prints their medians: the router's per-packet
# cost, and one TCP stream through pias next to one direct wireguard-go
# tunnel, measured interleaved in the same run, with their ratio.
#
#   scripts/bench.sh [COUNT]     (default 5 runs of each)
set -euo pipefail
cd "$(dirname "$0")/.."
count=${1:-5}
out=$(mktemp)
trap 'rm -f "$out"' EXIT

go test -run '^$' -bench . -benchmem -count "$count" ./router | tee -a "$out"
go test -run '^$' -bench Throughput -benchtime 20x -count "$count" ./lab | tee -a "$out"

# median of column values per benchmark name and unit
echo
echo "medians over $count runs:"
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
}' "$out" | sort
