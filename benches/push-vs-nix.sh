#!/usr/bin/env bash
# Pushes, side by side in one run, the same closures with `cachecore push` and with
# `nix copy --to 'file://…?compression=zstd'` into fresh local-directory caches, and prints the
# median wall times, the ratio (>1: cachecore faster), the compressed sizes and their ratio, and
# the time to re-push an already-present closure.
#
#   benches/push-vs-nix.sh   # Python install as one ~600 MiB store path; 1,000 small paths as a chain and as a tree
#
# Needs nix-bin and hyperfine. RUNS (default 3) runs each.
set -euo pipefail
cd "$(dirname "$0")/.."
export NIX_REMOTE=local
runs="${RUNS:-3}"
work="${BENCH_DIR:-/tmp/cachecore-bench}"
mkdir -p "$work"
# CACHECORE_BIN: a release binary already built (else it is built here).
cc="${CACHECORE_BIN:-}"
if [ -z "$cc" ]; then
  cargo build --release -p cachecore-cli --quiet
  cc="$PWD/target/release/cachecore"
fi
nixc=(nix --extra-experimental-features nix-command)

# 1. One large path: a copy of the Python installation, added to the store.
py_prefix=$(python3 -c 'import sys; print(sys.base_prefix)')
[ -d "$work/python" ] || cp -a "$py_prefix" "$work/python"
big=$(nix-store --add "$work/python")

# 2. Many small paths, two closures of 1,000 text files each:
#    chain: each file refers to the previous one, so every narinfo waits for the one before it
#           (the worst case for a push that publishes a path only after its references);
#    tree:  each file refers to its parent in a binary tree (depth 10) and to the root.
cat > "$work/many.nix" <<'NIX'
let step = prev: i: builtins.toFile "cachecore-bench-${toString i}" "${toString i} ${prev}";
in builtins.foldl' step "start" (builtins.genList (i: i) 1000)
NIX
cat > "$work/tree.nix" <<'NIX'
let
  mk = i: builtins.toFile "cachecore-tree-${toString i}"
    (if i == 0 then "root" else "${toString i} ${node ((i - 1) / 2)} ${node 0}");
  nodes = builtins.genList mk 1000;
  node = i: builtins.elemAt nodes i;
in builtins.toFile "cachecore-tree-top" (builtins.concatStringsSep "\n" nodes)
NIX
small=$(nix-instantiate --eval --read-write-mode "$work/many.nix" | tr -d '"' | awk '{print $NF}')
small_count=$(nix-store -qR "$small" | wc -l)
tree=$(nix-instantiate --eval --read-write-mode "$work/tree.nix" | tr -d '"')

bench() { # name path [cache parent directory]
  local name=$1 path=$2 dir=${3:-$work}
  hyperfine --style basic --runs "$runs" --export-json "$work/push-$name.json" \
    --prepare "rm -rf '$dir/cc-$name' '$dir/nix-$name'" \
    -n "cachecore push" "$cc push '$dir/cc-$name' '$path' --quiet" \
    -n "nix copy" "${nixc[*]} copy --to 'file://$dir/nix-$name?compression=zstd' '$path'" >/dev/null
  # Leave one of each for the size comparison.
  rm -rf "$dir/cc-$name" "$dir/nix-$name"
  "$cc" push "$dir/cc-$name" "$path" --quiet
  "${nixc[@]}" copy --quiet --to "file://$dir/nix-$name?compression=zstd" "$path"
  python3 - "$work/push-$name.json" "$dir/cc-$name" "$dir/nix-$name" "$name" <<'PY'
import json, os, sys
res = {r["command"]: r["median"] for r in json.load(open(sys.argv[1]))["results"]}
def nar_bytes(d):
    return sum(os.path.getsize(os.path.join(d, "nar", f)) for f in os.listdir(os.path.join(d, "nar")))
ours, theirs = nar_bytes(sys.argv[2]), nar_bytes(sys.argv[3])
c, n = res["cachecore push"], res["nix copy"]
print(f"{sys.argv[4]:11} cachecore {c:7.2f}s | nix copy {n:7.2f}s | speed ratio {n/c:4.2f}x"
      f" | size {ours/2**20:8.1f} MiB vs {theirs/2**20:8.1f} MiB ({ours/theirs*100:5.1f}%)")
PY
}

echo "large: $big"
bench large "$big"
echo "small: $small_count paths in a chain (chain), and in a tree (tree)"
bench chain "$small"
bench tree "$tree"
# The same on a tmpfs: on this VM's disk both tools spend much of a small-path push in the
# kernel creating files (three per path for cachecore — NAR, .ls, narinfo — two for Nix); in
# memory what is left is the tools' own work.
shm=/dev/shm/cachecore-bench
mkdir -p "$shm"
echo "small, caches on tmpfs ($shm)"
bench chain-tmpfs "$small" "$shm"
bench tree-tmpfs "$tree" "$shm"
rm -rf "$shm"

# Re-pushing a closure that is already there: existence checks only.
hyperfine --style basic --runs 5 -n "re-push $small_count present paths" \
  "$cc push '$work/cc-chain' '$small' --quiet" | grep -E 'Time|re-push'
rm -rf "$work/cc-peak"
peak=$( { /usr/bin/time -f %M "$cc" push "$work/cc-peak" "$big" --quiet; } 2>&1 | tail -n1 )
echo "peak memory of cachecore push (large): $((peak / 1024)) MiB"

# A 4 GiB NAR of incompressible bytes (the worst case for the upload buffers), pushed with
# --add so it needs no store path. GIB4=0 skips it (it writes 8 GiB to disk).
if [ "${GIB4:-1}" != 0 ]; then
  mkdir -p "$work/gib4"
  [ -f "$work/gib4/random" ] || head -c 4G /dev/urandom > "$work/gib4/random"
  rm -rf "$work/cc-gib4"
  out=$( { /usr/bin/time -f '%e %M' "$cc" push "$work/cc-gib4" --add "$work/gib4" --quiet; } 2>&1 | tail -n1 )
  read -r secs peak <<<"$out"
  echo "4 GiB incompressible NAR: ${secs}s, peak memory $((peak / 1024)) MiB"
  rm -rf "$work/cc-gib4"
fi
