# Sourced by the serve benches: the cache both servers serve, built once under $work (1,000
# small narinfos for the narinfo load, 16 NARs of 8 MiB of random bytes for the NAR load), the
# wrk script cycling over a list of paths, and `load NAME PORT PATHS OUT [WRK ARGS...]`.
# Needs $work, $cc (the cachecore binary), $duration, nix-bin and wrk.
cache="$work/cache"
if [ ! -f "$cache/.complete" ]; then
  rm -rf "$cache"
  # 1,000 small paths (a binary tree of text files) for the narinfo load.
  cat > "$work/tree.nix" <<'NIX'
let
  mk = i: builtins.toFile "cachecore-serve-tree-${toString i}"
    (if i == 0 then "root" else "${toString i} ${node ((i - 1) / 2)} ${node 0}");
  nodes = builtins.genList mk 1000;
  node = i: builtins.elemAt nodes i;
in builtins.toFile "cachecore-serve-tree-top" (builtins.concatStringsSep "\n" nodes)
NIX
  tree=$(nix-instantiate --eval --read-write-mode "$work/tree.nix" | tr -d '"')
  "$cc" push "$cache" "$tree" --quiet
  # 16 paths of 8 MiB of random bytes for the NAR load.
  for i in $(seq 1 16); do
    d="$work/blob-$i"
    mkdir -p "$d"
    head -c $((8 << 20)) /dev/urandom > "$d/data"
    "$cc" push "$cache" "$(nix-store --add "$d")" --quiet
  done
  touch "$cache/.complete"
fi
ls "$cache" | grep '\.narinfo$' | sed 's|^|/|' > "$work/narinfo-paths"
find "$cache/nar" -type f -size +1M -printf '/nar/%f\n' > "$work/nar-paths"
echo "cache: $(wc -l < "$work/narinfo-paths") narinfos, $(wc -l < "$work/nar-paths") NARs over 1 MiB ($(du -sh "$cache/nar" | cut -f1) of NARs)"

cat > "$work/paths.lua" <<'LUA'
local paths = {}
for line in io.lines(os.getenv("WRK_PATHS")) do paths[#paths + 1] = line end
local i = math.random(#paths)
request = function()
  i = i % #paths + 1
  return wrk.format("GET", paths[i])
end
LUA

load() { # name port paths-file output-file [extra wrk arguments]
  local name=$1 port=$2 paths=$3 out=$4
  shift 4
  WRK_PATHS="$paths" wrk -t 2 -c 16 -d "$duration" --latency -s "$work/paths.lua" "$@" \
    "http://127.0.0.1:$port" > "$out"
}
