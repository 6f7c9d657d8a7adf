#!/usr/bin/env bash
# Plans a GC of N synthetic store paths (default 1,000,000) from the push index, as `gc` reads
# it: index objects of 100,000 entries parsed straight into the snapshot, each entry checked
# against its listed narinfo, the NARs added as listed, then the plan. Prints the time to build
# the snapshot, the planning time and the peak memory of the process (target for 1,000,000:
# under 5 s and under 512 MiB). Requests to a real store are not made: the README's garbage
# collection section counts them for S3.
#
#   benches/gc-scale.sh [N]          RUNS=3 benches/gc-scale.sh   (prints each run)
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --locked --quiet -p cachecore-benches --bin gc-plan-scale
for _ in $(seq "${RUNS:-1}"); do
    target/release/gc-plan-scale "${1:-1000000}"
done
