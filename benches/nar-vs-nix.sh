#!/usr/bin/env bash
# Times, side by side in one run, `cachecore nar pack` against `nix-store --dump` and
# `cachecore nar hash` against `nix-hash --type sha256 --base32` on a large tree, and prints the
# median of each and the ratios (>1 means cachecore is faster), plus peak memory (max RSS).
# Packing is timed where a NAR goes: into /dev/null, and into a pipe (`| cat > /dev/null`, the
# pipe alone; `| zstd -T0 > FILE`, a compressor reading it), with each side's spread (min-max).
#
#   benches/nar-vs-nix.sh [TREE]        # default: a copy of this machine's Python installation
#
# Needs nix-bin, hyperfine and GNU time. Set RUNS (default 7).
set -euo pipefail
cd "$(dirname "$0")/.."
export NIX_REMOTE=local
runs="${RUNS:-7}"
work="${BENCH_DIR:-/tmp/cachecore-bench}"
mkdir -p "$work"

tree="${1:-}"
if [ -z "$tree" ]; then
  # A copy of the Python installation: ~600-750 MiB, ~55,000 entries.
  py_prefix=$(python3 -c 'import sys; print(sys.base_prefix)')
  tree="$work/python"
  [ -d "$tree" ] || cp -a "$py_prefix" "$tree"
fi

# CACHECORE_BIN: a release binary already built (else it is built here).
cc="${CACHECORE_BIN:-}"
if [ -z "$cc" ]; then
  cargo build --release -p cachecore-cli --quiet
  cc="$PWD/target/release/cachecore"
fi

size=$(du -sb "$tree" | cut -f1)
entries=$(find "$tree" | wc -l)
echo "tree: $tree ($((size / 1048576)) MiB on disk, $entries entries)"

# Same bytes first: a benchmark of wrong output is meaningless.
cmp <("$cc" nar pack "$tree") <(nix-store --dump "$tree") && echo "pack output identical to nix-store --dump"
[ "$("$cc" nar hash --bare "$tree")" = "$(nix-hash --type sha256 --base32 "$tree")" ] && echo "hash identical to nix-hash"

cmp <("$cc" nar pack "$tree" | cat) <(nix-store --dump "$tree") && echo "pack output through a pipe identical too"

hyperfine --style basic --warmup 1 --runs "$runs" --export-json "$work/pack.json" \
  -n "cachecore nar pack" "$cc nar pack '$tree' > /dev/null" \
  -n "nix-store --dump" "nix-store --dump '$tree' > /dev/null" \
  -n "cachecore | cat" "$cc nar pack '$tree' | cat > /dev/null" \
  -n "nix-store | cat" "nix-store --dump '$tree' | cat > /dev/null" \
  -n "cachecore | zstd" "$cc nar pack '$tree' | zstd -T0 -q -f -o '$work/pack.nar.zst'" \
  -n "nix-store | zstd" "nix-store --dump '$tree' | zstd -T0 -q -f -o '$work/dump.nar.zst'" >/dev/null
hyperfine --style basic --warmup 1 --runs "$runs" --export-json "$work/hash.json" \
  -n "cachecore nar hash" "$cc nar hash '$tree'" \
  -n "nix-hash" "nix-hash --type sha256 --base32 '$tree'" >/dev/null

peak() { /usr/bin/time -f %M "$@" 2>&1 >/dev/null | tail -n1; }
mem_pack=$(peak "$cc" nar pack "$tree")
mem_dump=$(peak nix-store --dump "$tree")
mem_hash=$(peak "$cc" nar hash "$tree")
mem_nixhash=$(peak nix-hash --type sha256 --base32 "$tree")

python3 - "$work/pack.json" "$work/hash.json" "$size" <<PY
import json, sys
size = int(sys.argv[3])
def med(path):
    return {r["command"]: r["median"] for r in json.load(open(path))["results"]}
def spread(path):
    return {r["command"]: (r["min"], r["max"]) for r in json.load(open(path))["results"]}
pack, hsh = med(sys.argv[1]), med(sys.argv[2])
ranges = spread(sys.argv[1])
def line(name, ours, theirs, mine, other, rss_ours, rss_theirs):
    print(f"{name:6} cachecore {mine:7.3f}s ({size/mine/2**20:6.0f} MiB/s, {rss_ours/1024:5.1f} MiB peak)"
          f" | {other:24} {theirs:7.3f}s ({rss_theirs/1024:5.1f} MiB peak) | ratio {theirs/mine:4.2f}x")
line("pack", None, pack["nix-store --dump"], pack["cachecore nar pack"], "nix-store --dump", $mem_pack, $mem_dump)
line("hash", None, hsh["nix-hash"], hsh["cachecore nar hash"], "nix-hash", $mem_hash, $mem_nixhash)
def piped(name, ours, theirs):
    (lo, hi), (tlo, thi) = ranges[ours], ranges[theirs]
    print(f"{name:20} cachecore {pack[ours]:7.3f}s (spread {hi - lo:5.3f}s)"
          f" | nix-store --dump {pack[theirs]:7.3f}s (spread {thi - tlo:5.3f}s)"
          f" | ratio {pack[theirs] / pack[ours]:4.2f}x")
piped("pack > /dev/null", "cachecore nar pack", "nix-store --dump")
piped("pack | cat", "cachecore | cat", "nix-store | cat")
piped("pack | zstd -T0", "cachecore | zstd", "nix-store | zstd")
PY
