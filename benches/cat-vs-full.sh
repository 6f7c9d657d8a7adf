#!/usr/bin/env bash
# Reads one ~1 KiB file out of a ~600 MiB store path in a Garage (S3) bucket, side by side in one
# run: `cachecore cat` (narinfo, listing, seek table, the one frame holding the file: ranged GETs)
# against `cachecore cat --verify` (the whole NAR downloaded, decompressed and checked against
# its NarHash, as Nix would fetch it). Prints the median times and their ratio (target: >= 20x).
# The bytes a ranged read fetches are counted by the test `cachecore/tests/random_access.rs`.
#
#   benches/cat-vs-full.sh
#
# The store path is 11 copies of the Python library (/usr/lib/python3.*), pushed with
# `cachecore push --add`. Needs garage (~/.cargo/bin/garage, see .ci/garage), hyperfine,
# python3. RUNS (default 5) runs each.
set -euo pipefail
cd "$(dirname "$0")/.."
runs="${RUNS:-5}"
work="${BENCH_DIR:-/tmp/cachecore-bench-cat}"
mkdir -p "$work"
# CACHECORE_BIN: a release binary already built (else it is built here).
cc="${CACHECORE_BIN:-}"
if [ -z "$cc" ]; then
  cargo build --release -p cachecore-cli --quiet
  cc="$PWD/target/release/cachecore"
fi

# 1. The tree: 11 copies of the Python library (~600 MiB), and a ~1 KiB file to read.
py=$(ls -d /usr/lib/python3.* | head -n1)
tree="$work/tree"
if [ ! -d "$tree" ]; then
  mkdir -p "$tree"
  for i in $(seq -w 1 11); do cp -a "$py" "$tree/copy$i"; done
fi
needle=$(cd "$tree/copy06" && find . -type f -size -1100c -size +900c -name '*.py' | sort | head -n1)
needle="copy06/${needle#./}"
echo "tree: $(du -sh "$tree" | cut -f1) in $(find "$tree" -type f | wc -l) files; reading $needle ($(stat -c %s "$tree/$needle") bytes)"

# 2. A private Garage on free ports.
. benches/garage.sh
start_garage "$work/garage"
trap stop_garage EXIT

# 3. Push the tree as one store path.
path=$("$cc" push "$store" --add "$tree" --name python-copies --quiet)
info=$("$cc" info "$store")
echo "pushed $path"
echo "$info" | grep -E 'NarBytes|FileBytes'

# Both commands must print the same bytes as the file on disk.
cmp <("$cc" cat "$store" "$path/$needle") "$tree/$needle"
cmp <("$cc" cat --verify "$store" "$path/$needle") "$tree/$needle"

# 4. Side by side.
hyperfine --style basic --warmup 1 --runs "$runs" --export-json "$work/cat.json" \
  -n "cachecore cat (ranged)" "$cc cat '$store' '$path/$needle' >/dev/null" \
  -n "cachecore cat --verify (whole NAR)" "$cc cat --verify '$store' '$path/$needle' >/dev/null" >/dev/null
python3 - "$work/cat.json" <<'PY'
import json, sys
res = {r["command"]: r["median"] for r in json.load(open(sys.argv[1]))["results"]}
ranged, whole = res["cachecore cat (ranged)"], res["cachecore cat --verify (whole NAR)"]
print(f"cat (ranged) {ranged*1000:8.1f} ms | cat --verify (whole NAR) {whole*1000:8.1f} ms | ratio {whole/ranged:6.1f}x")
PY
