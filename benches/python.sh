#!/usr/bin/env bash
# The Python bindings against the `cachecore` command on the same data, side by side in one run
# (target: within 10%): `cachecore.nar.hash` vs `cachecore nar hash`, `Cache.add` vs
# `cachecore push --add` (into a fresh directory cache each run), and reading one large file
# through `Cache.open` (ranged reads, `shutil.copyfileobj`) vs `cachecore cat`. Prints the
# medians and the ratios (>1 means Python is faster).
#
#   benches/python.sh [TREE]       # default: a copy of this machine's Python installation
#
# Needs hyperfine and a virtualenv with the bindings: PYTHON (default: builds one in the bench
# directory with `pip install ./cachecore-py`). CACHECORE_BIN: a release `cachecore` (else built
# here). RUNS (default 5).
set -euo pipefail
cd "$(dirname "$0")/.."
runs="${RUNS:-5}"
work="${BENCH_DIR:-/tmp/cachecore-bench-python}"
mkdir -p "$work"

cc="${CACHECORE_BIN:-}"
if [ -z "$cc" ]; then
  cargo build --release -p cachecore-cli --quiet
  cc="$PWD/target/release/cachecore"
fi
py="${PYTHON:-}"
if [ -z "$py" ]; then
  [ -x "$work/venv/bin/python" ] || python3 -m venv "$work/venv"
  "$work/venv/bin/pip" install --quiet ./cachecore-py
  py="$work/venv/bin/python"
fi

tree="${1:-}"
if [ -z "$tree" ]; then
  tree="$work/python"
  [ -d "$tree" ] || cp -a "$(python3 -c 'import sys; print(sys.base_prefix)')" "$tree"
fi
echo "tree: $tree ($(du -sh "$tree" | cut -f1), $(find "$tree" | wc -l) entries)"

# Same answers first.
ours=$("$py" -c 'import sys, cachecore; print(cachecore.nar.hash(sys.argv[1])[0])' "$tree")
[ "$ours" = "$("$cc" nar hash "$tree")" ] && echo "nar.hash identical to cachecore nar hash"

# A cache holding the tree, and its largest file, to read back.
rm -rf "$work/read-cache"
path=$("$cc" push "$work/read-cache" --add "$tree" --name tree --quiet)
big=$(cd "$tree" && find . -type f -printf '%s %P\n' | sort -n | tail -n1 | cut -d' ' -f2)
echo "reading $big ($(stat -c %s "$tree/$big") bytes) out of $path"
cmp <("$cc" cat "$work/read-cache" "$path/$big") "$tree/$big"
read_py="import shutil, sys, cachecore
c = cachecore.Cache(sys.argv[1])
with c.open(sys.argv[2]) as f, open('/dev/null', 'wb') as out:
    shutil.copyfileobj(f, out, 1 << 20)"
"$py" -c "$read_py" "$work/read-cache" "$path/$big"

hyperfine --style basic --warmup 1 --runs "$runs" --export-json "$work/hash.json" \
  -n "py nar.hash" "$py -c 'import sys, cachecore; cachecore.nar.hash(sys.argv[1])' '$tree'" \
  -n "cli nar hash" "$cc nar hash '$tree'" >/dev/null
hyperfine --style basic --warmup 1 --runs "$runs" --export-json "$work/push.json" \
  --prepare "rm -rf '$work/push-cache'" \
  -n "py Cache.add" \
  "$py -c 'import sys, cachecore; cachecore.Cache(sys.argv[1]).add(sys.argv[2], \"tree\")' '$work/push-cache' '$tree'" \
  -n "cli push --add" "$cc push '$work/push-cache' --add '$tree' --name tree --quiet" >/dev/null
hyperfine --style basic --warmup 1 --runs "$runs" --export-json "$work/read.json" \
  -n "py Cache.open" "$py -c \"$read_py\" '$work/read-cache' '$path/$big'" \
  -n "cli cat" "$cc cat '$work/read-cache' '$path/$big' > /dev/null" >/dev/null

python3 - "$work"/{hash,push,read}.json <<'PY'
import json, sys
med = {r["command"]: r["median"] for f in sys.argv[1:] for r in json.load(open(f))["results"]}
for what, py, cli in [
    ("nar hash", "py nar.hash", "cli nar hash"),
    ("push --add", "py Cache.add", "cli push --add"),
    ("read a file", "py Cache.open", "cli cat"),
]:
    print(f"{what:12} python {med[py]:7.3f}s | cli {med[cli]:7.3f}s | ratio {med[cli] / med[py]:4.2f}x")
PY
