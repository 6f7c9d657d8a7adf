#!/usr/bin/env bash
# Reads one ~1 KiB file out of a ~600 MiB store path in a Garage (S3) bucket, side by side in one
# run: `cachecore cat` (narinfo, listing, seek table, the one frame holding the file: ranged GETs)
# against `cachecore cat --verify` (the whole NAR downloaded, decompressed and checked against
# its NarHash, as Nix would fetch it). Prints the median times and their ratio (target: >= 20x).
# The bytes a ranged read fetches are counted by the test `cachecore/tests/random_access.rs`.
#
# Then the small objects stored compressed (`Content-Encoding`, issue 25): the same path pushed
# again under a prefix with `ls-compression=zstd&narinfo-compression=zstd&log-compression=zstd`,
# beside a plain push, with a built derivation's log (`push --logs`). Prints the bytes `cat` of
# the 1 KiB file fetched from each (counted by a TCP relay in front of Garage's S3 port,
# `benches/byte-counter.py`, HTTP headers included) and the bytes stored for listings, narinfos
# and logs in each.
#
#   benches/cat-vs-full.sh
#
# The store path is 11 copies of the Python library (/usr/lib/python3.*), pushed with
# `cachecore push --add`. Needs garage (~/.cargo/bin/garage, see .ci/garage), hyperfine,
# python3, curl (with --aws-sigv4) and nix-build. RUNS (default 5) runs each.
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

# 5. Listings, narinfos and logs stored with Content-Encoding: zstd, beside plain ones.
base="s3://nixcache/%s?endpoint=http://127.0.0.1:$garage_s3&region=garage"
encoded="narinfo-compression=zstd&ls-compression=zstd&log-compression=zstd"
# A derivation with a build log of a compiler's kind (20,000 lines), built afresh each run.
cat > "$work/logged.sh" <<'SH'
i=0
while [ $i -lt 20000 ]; do
  echo "gcc -O2 -fPIC -Iinclude -c src/module$i.c -o build/module$i.o"
  i=$((i + 1))
done
echo done > "$out"
SH
cat > "$work/logged.nix" <<NIX
derivation {
  name = "bench-logged"; system = "x86_64-linux"; builder = "/bin/sh";
  args = [ ./logged.sh ]; nonce = "$(date +%s%N)";
}
NIX
logged=$(nix-build --no-out-link "$work/logged.nix" 2>/dev/null)
for kind in plain zstd; do
  url=$(printf "$base" "$kind")
  [ "$kind" = zstd ] && url="$url&$encoded"
  "$cc" push "$url" --add "$tree" --name python-copies --quiet >/dev/null
  "$cc" push "$url" --logs "$logged" --quiet >/dev/null
done
rm -f "$work/relay.port"
python3 benches/byte-counter.py "$work/relay.port" "$garage_s3" "$work/relay.count" &
relay_pid=$!
trap 'kill $relay_pid 2>/dev/null; stop_garage' EXIT
for _ in $(seq 50); do [ -s "$work/relay.port" ] && break; sleep 0.1; done
relay="http://127.0.0.1:$(cat "$work/relay.port")"
fetched() { # the bytes fetched by `cat` of the needle from prefix $1 (median of 3 reads)
  local url="s3://nixcache/$1?endpoint=$relay&region=garage" n
  for _ in 1 2 3; do
    : > "$work/relay.count"
    "$cc" cat "$url" "$path/$needle" | cmp - "$tree/$needle"
    sleep 0.2 # the relay appends once the connection has closed
    awk '{s+=$1} END {print s}' "$work/relay.count"
  done | sort -n | sed -n 2p
}
stored() { # bytes stored under prefix $1 for keys ending in $2 (S3 ListObjectsV2)
  curl -sf --aws-sigv4 "aws:amz:garage:s3" --user "$AWS_ACCESS_KEY_ID:$AWS_SECRET_ACCESS_KEY" \
    -H "x-amz-content-sha256: UNSIGNED-PAYLOAD" \
    "http://127.0.0.1:$garage_s3/nixcache?list-type=2&max-keys=1000&prefix=$1%2F" |
    python3 -c '
import re, sys
xml, suffix = sys.stdin.read(), sys.argv[1]
print(sum(int(s) for k, s in re.findall(r"<Key>([^<]*)</Key>.*?<Size>(\d+)</Size>", xml, re.S)
          if re.search(suffix, k)))' "$2"
}
plain_cat=$(fetched plain); zstd_cat=$(fetched zstd)
printf "cat of a 1 KiB file fetched   plain %9d B | ls-compression=zstd %9d B | %.2fx fewer\n" \
  "$plain_cat" "$zstd_cat" "$(python3 -c "print($plain_cat/$zstd_cat)")"
for what in "listings:\.ls$" "narinfos:\.narinfo$" "logs:^[^/]*/log/"; do
  name=${what%%:*}; re=${what#*:}
  p=$(stored plain "$re"); z=$(stored zstd "$re")
  printf "%-9s stored                plain %9d B | zstd                %9d B | %.1fx smaller\n" \
    "$name" "$p" "$z" "$(python3 -c "print($p/max($z,1))")"
done
