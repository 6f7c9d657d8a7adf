# Sourced by the benches: starts a private Garage (S3 API and website endpoint) on free ports
# under $1, with bucket `nixcache` and a key that may read and write it, and stops it on exit.
# Sets: garage_s3 (S3 port), garage_web (website port), store (the s3:// URL), and exports
# AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY. Needs garage (~/.cargo/bin/garage, see .ci/garage).
start_garage() {
  local g=$1
  local garage="${GARAGE_BIN:-$(command -v garage || echo "$HOME/.cargo/bin/garage")}"
  [ -x "$garage" ] || { echo "garage is not installed: run .ci/garage" >&2; exit 1; }
  rm -rf "$g" && mkdir -p "$g"
  local rpc admin
  read -r rpc garage_s3 admin garage_web < <(python3 -c '
import socket
ss = [socket.socket() for _ in range(4)]
for s in ss: s.bind(("127.0.0.1", 0))
print(*[s.getsockname()[1] for s in ss])')
  cat > "$g/garage.toml" <<TOML
metadata_dir = "$g/meta"
data_dir = "$g/data"
db_engine = "sqlite"
replication_factor = 1
rpc_bind_addr = "127.0.0.1:$rpc"
rpc_public_addr = "127.0.0.1:$rpc"
rpc_secret = "$(python3 -c 'import secrets; print(secrets.token_hex(32))')"
[s3_api]
s3_region = "garage"
api_bind_addr = "127.0.0.1:$garage_s3"
root_domain = ".s3.garage.localhost"
[s3_web]
bind_addr = "127.0.0.1:$garage_web"
root_domain = ".web.garage.localhost"
[admin]
api_bind_addr = "127.0.0.1:$admin"
admin_token = "$(python3 -c 'import secrets; print(secrets.token_hex(16))')"
TOML
  G=("$garage" -c "$g/garage.toml")
  RUST_LOG=garage=warn "${G[@]}" server >"$g/log" 2>&1 &
  garage_pid=$!
  for _ in $(seq 100); do "${G[@]}" status >/dev/null 2>&1 && break; sleep 0.2; done
  local node keyinfo
  node=$("${G[@]}" node id -q | cut -d@ -f1)
  "${G[@]}" layout assign -z dc1 -c 10G "$node" >/dev/null
  "${G[@]}" layout apply --version 1 >/dev/null
  for _ in $(seq 50); do "${G[@]}" bucket create nixcache >/dev/null 2>&1 && break; sleep 0.2; done
  keyinfo=$("${G[@]}" key create bench-key)
  export AWS_ACCESS_KEY_ID=$(awk -F': *' 'tolower($1) ~ /key id/ {print $2; exit}' <<<"$keyinfo")
  export AWS_SECRET_ACCESS_KEY=$(awk -F': *' 'tolower($1) ~ /secret key/ {print $2; exit}' <<<"$keyinfo")
  "${G[@]}" bucket allow --read --write --owner nixcache --key bench-key >/dev/null
  "${G[@]}" bucket website --allow nixcache >/dev/null
  store="s3://nixcache?endpoint=http://127.0.0.1:$garage_s3&region=garage"
}

stop_garage() {
  kill "$garage_pid" 2>/dev/null || true
  wait "$garage_pid" 2>/dev/null || true
}
