#!/usr/bin/env bash
# `cachecore serve` in front of Garage (S3) against reading Garage directly (its website
# endpoint, static objects), side by side in one run, loaded by wrk on loopback:
#   narinfo: GETs cycling over 1,000 narinfos, 16 keep-alive connections — req/s and p99 latency;
#   nar:     GETs cycling over 16 NARs of 8 MiB, 16 connections — MiB/s;
# then the ratios (serve / Garage; target >= 0.9) and the peak RSS of `cachecore serve`.
# Then the NAR load again with a client that follows redirects (benches/src/bin/fetch-load.rs,
# 16 connections), against Garage directly and against `serve --redirect-nars`, which answers
# each NAR with a redirect to a presigned URL in the bucket.
#
#   RUNS=3 benches/serve-vs-garage.sh
#
# Needs nix-bin, wrk and garage (see .ci/garage). RUNS (default 3) alternating runs, DURATION
# (default 10s) per wrk run; medians are reported. The same cache as benches/serve-vs-nginx.sh,
# copied into a private Garage bucket with `cachecore copy`.
set -euo pipefail
cd "$(dirname "$0")/.."
export NIX_REMOTE=local
runs="${RUNS:-3}"
duration="${DURATION:-10s}"
work="${BENCH_DIR:-/tmp/cachecore-serve-bench}"
mkdir -p "$work"
cc="${CACHECORE_BIN:-}"
if [ -z "$cc" ]; then
  cargo build --release -p cachecore-cli --quiet
  cc="$PWD/target/release/cachecore"
fi
cargo build --release -p cachecore-benches --bin fetch-load --quiet
fetch_load="$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')/release/fetch-load"
. benches/serve-cache.sh
. benches/garage.sh

start_garage "$work/garage"
"$cc" copy "$cache" "$store" --all --quiet
serve_port=18483
RUST_LOG=warn "$cc" serve "$store" --listen "127.0.0.1:$serve_port" > "$work/serve-g.out" 2> "$work/serve-g.err" &
serve_pid=$!
redirect_port=18484
RUST_LOG=warn "$cc" serve "$store" --listen "127.0.0.1:$redirect_port" --redirect-nars > "$work/serve-r.out" 2> "$work/serve-r.err" &
redirect_pid=$!
# Narinfos read from the bucket on every request (no --remote-read-ttl memory).
nottl_port=18485
RUST_LOG=warn "$cc" serve "$store" --listen "127.0.0.1:$nottl_port" --remote-read-ttl 0 > "$work/serve-n.out" 2> "$work/serve-n.err" &
nottl_pid=$!
cleanup() { kill "$serve_pid" "$redirect_pid" "$nottl_pid" 2>/dev/null || true; stop_garage; }
trap cleanup EXIT
for out in serve-g serve-r serve-n; do
  for _ in $(seq 1 100); do grep -q listening "$work/$out.out" 2>/dev/null && break; sleep 0.1; done
done
host="nixcache.web.garage.localhost"
# `copy` names NARs after their file hash: the NARs over 1 MiB, as the bucket's narinfos name them.
while read -r p; do
  curl -sf "http://127.0.0.1:$serve_port$p" |
    awk -F': ' '$1 == "URL" {u = $2} $1 == "FileSize" {s = $2} END {if (s > 1048576) print "/" u}'
done < "$work/narinfo-paths" > "$work/nar-paths-garage"
cp "$work/narinfo-paths" "$work/narinfo-paths-garage"
first=$(head -1 "$work/nar-paths-garage")
cmp <(curl -sf -H "Host: $host" "http://127.0.0.1:$garage_web$first") \
    <(curl -sf "http://127.0.0.1:$serve_port$first")

for run in $(seq 1 "$runs"); do
  for kind in narinfo nar; do
    load "$kind" "$garage_web" "$work/$kind-paths-garage" "$work/wrk-garage-$kind-$run.txt" -H "Host: $host"
    load "$kind" "$serve_port" "$work/$kind-paths-garage" "$work/wrk-serveg-$kind-$run.txt"
  done
  load narinfo "$nottl_port" "$work/narinfo-paths-garage" "$work/wrk-serven-narinfo-$run.txt"
done
rss_kib=$(awk '/VmHWM/ {print $2}' "/proc/$serve_pid/status")
seconds=${duration%s}
for run in $(seq 1 "$runs"); do
  "$fetch_load" "http://127.0.0.1:$garage_web" "$work/nar-paths-garage" 16 "$seconds" "$host" > "$work/fl-garage-$run.txt"
  "$fetch_load" "http://127.0.0.1:$redirect_port" "$work/nar-paths-garage" 16 "$seconds" > "$work/fl-redirect-$run.txt"
done

python3 - "$work" "$runs" "$rss_kib" <<'PY'
import sys
sys.path.insert(0, "benches")
from wrk_results import medians
work, runs, rss = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
res = {(server, kind): medians(work, runs, server, kind)
       for server in ("garage", "serveg") for kind in ("narinfo", "nar")}
g, s = res["garage", "narinfo"], res["serveg", "narinfo"]
print(f"narinfo  garage {g[0]:9.0f} req/s p99 {g[1]:6.2f} ms | serve s3:// {s[0]:9.0f} req/s p99 {s[1]:6.2f} ms"
      f" | req/s ratio {s[0]/g[0]:.2f}x (target >= 0.9)")
s = medians(work, runs, "serven", "narinfo")
print(f"narinfo, --remote-read-ttl 0 (every read asks the bucket): serve s3:// {s[0]:9.0f} req/s p99 {s[1]:6.2f} ms"
      f" | req/s ratio {s[0]/g[0]:.2f}x")
g, s = res["garage", "nar"], res["serveg", "nar"]
print(f"nar      garage {g[2]:9.0f} MiB/s           | serve s3:// {s[2]:9.0f} MiB/s"
      f"           | MiB/s ratio {s[2]/g[2]:.2f}x (target >= 0.9)")
print(f"peak RSS of cachecore serve: {rss/1024:.1f} MiB (target < 64)")
from statistics import median
def mibs(name):
    return median(float(open(f"{work}/fl-{name}-{r}.txt").read().split()[-1]) for r in range(1, runs + 1))
g, r = mibs("garage"), mibs("redirect")
print(f"nar, client following redirects: garage {g:6.0f} MiB/s | serve --redirect-nars {r:6.0f} MiB/s"
      f" | MiB/s ratio {r/g:.2f}x (target >= 0.9)")
PY
