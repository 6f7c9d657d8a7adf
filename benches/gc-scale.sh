#!/usr/bin/env bash
# Plans a GC of N synthetic store paths (default 1,000,000) and prints the time to build the
# snapshot, the planning time and the peak memory. The scan of a real cache (one GET per
# narinfo, no push index yet) is not measured here.
#
#   benches/gc-scale.sh [N]
set -euo pipefail
cd "$(dirname "$0")/.."
cargo run --release --locked --quiet -p cachecore-benches --bin gc-plan-scale -- "${1:-1000000}"
