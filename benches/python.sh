#!/usr/bin/env bash
# The Python bindings against the `cachecore` command on the same data, side by side in one run
# (target: within 10%): `cachecore.nar.hash` vs `cachecore nar hash`, `Cache.add` vs
# `cachecore push --add` (into a fresh directory cache each run), and reading one large file
# through `Cache.open` (ranged reads, `shutil.copyfileobj`) vs `cachecore cat`. Prints the
# medians and the ratios (>1 means Python is faster); Python is timed in one process, so the
# interpreter's start is not counted. Then the same read in two Python threads at once against
# one: the bytes per second of each, and their ratio (about 2x on two free cores: the GIL is
# released while Rust reads).
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

# The command, by hyperfine; Python, in one process (the interpreter's start and `import
# cachecore`, ~50-150 ms, are not what is compared): the median of RUNS calls after a warmup.
hyperfine --style basic --warmup 1 --runs "$runs" --export-json "$work/cli.json" \
  --prepare true --prepare "rm -rf '$work/push-cache'" --prepare true \
  -n "nar hash" "$cc nar hash '$tree'" \
  -n "push --add" "$cc push '$work/push-cache' --add '$tree' --name tree --quiet" \
  -n "read a file" "$cc cat '$work/read-cache' '$path/$big' > /dev/null" >/dev/null

"$py" - "$work" "$tree" "$path/$big" "$runs" "$work/cli.json" "$(stat -c %s "$tree/$big")" <<'PY'
import json, os, shutil, statistics, sys, time
from concurrent.futures import ThreadPoolExecutor
import cachecore

work, tree, file, runs, cli_json = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), sys.argv[5]
size = int(sys.argv[6])

def hash_tree():
    cachecore.nar.hash(tree)

def push_add():
    shutil.rmtree(f"{work}/push-cache", ignore_errors=True)
    start = time.perf_counter()
    cachecore.Cache(f"{work}/push-cache").add(tree, "tree")
    return time.perf_counter() - start

def read_file():
    with cachecore.Cache(f"{work}/read-cache").open(file) as f, open("/dev/null", "wb") as out:
        shutil.copyfileobj(f, out, 1 << 20)

def median(op):
    times = []
    for i in range(runs + 1):
        start = time.perf_counter()
        took = op()
        times.append(took if took is not None else time.perf_counter() - start)
    return statistics.median(times[1:])

cli = {r["command"]: r["median"] for r in json.load(open(cli_json))["results"]}
for what, op in [("nar hash", hash_tree), ("push --add", push_add), ("read a file", read_file)]:
    ours = median(op)
    print(f"{what:12} python {ours:7.3f}s | cli {cli[what]:7.3f}s | ratio {cli[what] / ours:4.2f}x")

# The GIL is released while Rust reads: two threads reading the file at once move about twice
# the bytes per second of one, given two free cores (1.0x would mean they ran in turn).
def read_in_threads(n):
    def run():
        with ThreadPoolExecutor(n) as pool:
            for reading in [pool.submit(read_file) for _ in range(n)]:
                reading.result()  # a failed read fails the bench
    return n * size / median(run) / 1e6

one, two = read_in_threads(1), read_in_threads(2)
print(f"{'threads':12} 1 reading {one:7.1f} MB/s | 2 at once {two:7.1f} MB/s in all | ratio {two / one:4.2f}x"
      f" (cores free to this process: {len(os.sched_getaffinity(0))})")
PY
