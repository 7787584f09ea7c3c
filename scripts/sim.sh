#!/usr/bin/env bash
# Regenerates every pias sim figure into docs/sim (or $1): fig6 over
# 100, 1,000 and 10,000 proxies × 60,000, 90,000 and 120,000 members at
# 0, 5, 25 and 50 % inaccuracy, and failures at 1,000 proxies in clusters
# of 10 and 100. CPU-heavy: hours on 2 cores at full size; set PROXIES and
# MEMBERS (comma lists) for a quicker run.
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-docs/sim}
go run ./cmd/pias sim fig6 --proxies "${PROXIES:-100,1000,10000}" --members "${MEMBERS:-60000,90000,120000}" --out "$out"
go run ./cmd/pias sim failures --proxies "${FAIL_PROXIES:-1000}" --clusters 10,100 --out "$out"
