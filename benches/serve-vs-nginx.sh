#!/usr/bin/env bash
# Serves one cache directory with `cachecore serve` and with nginx (static files) side by side,
# in one run, and loads each with wrk on loopback:
#   narinfo: GETs cycling over 1,000 narinfos, 16 keep-alive connections — req/s and p99 latency;
#   nar:     GETs cycling over 16 NARs of 8 MiB (incompressible), 16 connections — MiB/s;
# then prints the ratios (cachecore / nginx) and the peak RSS of `cachecore serve`.
#
#   RUNS=3 benches/serve-vs-nginx.sh
#
# Needs nix-bin, nginx and wrk. RUNS (default 3) alternating runs per server, DURATION (default
# 10s) per wrk run; medians are reported. Both servers log no requests (nginx: access_log off;
# serve: RUST_LOG=warn) and both send files from the page cache.
set -euo pipefail
cd "$(dirname "$0")/.."
export NIX_REMOTE=local
runs="${RUNS:-3}"
duration="${DURATION:-10s}"
work="${BENCH_DIR:-/tmp/cachecore-serve-bench}"
mkdir -p "$work"
# CACHECORE_BIN: a release binary already built (else it is built here).
cc="${CACHECORE_BIN:-}"
if [ -z "$cc" ]; then
  cargo build --release -p cachecore-cli --quiet
  cc="$PWD/target/release/cachecore"
fi

. benches/serve-cache.sh

nginx_port=18481
serve_port=18482
cat > "$work/nginx.conf" <<NGINX
worker_processes auto;
pid $work/nginx.pid;
error_log $work/nginx-error.log;
events { worker_connections 1024; }
http {
  access_log off;
  sendfile on;
  tcp_nopush on;
  keepalive_requests 1000000;
  types { text/x-nix-narinfo narinfo; application/x-nix-nar nar zst xz; text/x-nix-cache-info nix-cache-info; }
  default_type application/octet-stream;
  client_body_temp_path $work/nginx-tmp;
  server { listen 127.0.0.1:$nginx_port; root $cache; }
}
NGINX
mkdir -p "$work/nginx-tmp"

nginx -c "$work/nginx.conf" -p "$work"
RUST_LOG=warn "$cc" serve "$cache" --listen "127.0.0.1:$serve_port" > "$work/serve.out" 2> "$work/serve.err" &
serve_pid=$!
cleanup() { kill "$serve_pid" 2>/dev/null || true; nginx -c "$work/nginx.conf" -p "$work" -s stop 2>/dev/null || true; }
trap cleanup EXIT
for _ in $(seq 1 100); do grep -q listening "$work/serve.out" 2>/dev/null && break; sleep 0.1; done
curl -sf "http://127.0.0.1:$nginx_port/nix-cache-info" > /dev/null
curl -sf "http://127.0.0.1:$serve_port/nix-cache-info" > /dev/null
# Same bytes from both.
first=$(head -1 "$work/nar-paths")
cmp <(curl -s "http://127.0.0.1:$nginx_port$first") <(curl -s "http://127.0.0.1:$serve_port$first")

for run in $(seq 1 "$runs"); do
  for kind in narinfo nar; do
    load "$kind" "$nginx_port" "$work/$kind-paths" "$work/wrk-nginx-$kind-$run.txt"
    load "$kind" "$serve_port" "$work/$kind-paths" "$work/wrk-serve-$kind-$run.txt"
  done
done
rss_kib=$(awk '/VmHWM/ {print $2}' "/proc/$serve_pid/status")

python3 - "$work" "$runs" "$rss_kib" <<'PY'
import sys
sys.path.insert(0, "benches")
from wrk_results import medians
work, runs, rss = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
res = {(server, kind): medians(work, runs, server, kind)
       for server in ("nginx", "serve") for kind in ("narinfo", "nar")}
n, s = res["nginx", "narinfo"], res["serve", "narinfo"]
print(f"narinfo  nginx {n[0]:9.0f} req/s p99 {n[1]:6.2f} ms | cachecore serve {s[0]:9.0f} req/s p99 {s[1]:6.2f} ms"
      f" | req/s ratio {s[0]/n[0]:.2f}x (target >= 0.8) | p99 ratio {s[1]/n[1]:.2f}x (target <= 2)")
n, s = res["nginx", "nar"], res["serve", "nar"]
print(f"nar      nginx {n[2]:9.0f} MiB/s           | cachecore serve {s[2]:9.0f} MiB/s"
      f"           | MiB/s ratio {s[2]/n[2]:.2f}x (target >= 0.9)")
print(f"peak RSS of cachecore serve: {rss/1024:.1f} MiB (target < 64)")
PY
