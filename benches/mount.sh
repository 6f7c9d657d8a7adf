#!/usr/bin/env bash
# `cachecore mount` over a local-directory store and over Garage, side by side in one run, on a
# Python installation as one store path (COPIES copies of /usr/lib/python3.*, default 11:
# ~600 MiB), pushed with a signing key (so reads are --check frames: every frame fetched is
# checked against its signed digest). Prints, per store:
#
#   1. a ~1 KiB file: time to its first byte on a fresh mount (cold: empty --cache-dir) and the
#      NAR bytes fetched, against `cachecore pull` of the whole path (fetched, checked and
#      unpacked to disk: the issue's yardstick) and `cachecore cat --verify` of the file (the
#      whole NAR fetched and checked, nothing written: the part of pull a mount replaces);
#   2. `find PATH -type f | xargs cat`: cold (fresh mount) and warm (again), against the same
#      tree on local disk (page cache warm), and cold against `cachecore pull`; then again
#      on a new mount over the same --cache-dir (the frames read back from there);
#   3. `ls -lR`: cold and warm, and the NAR bytes it fetched (must be 0), of a second path
#      (the library's names LCOPIES times, files cut to 1 KiB: ~55,000 entries) and of PATH;
#   4. `python3 -c 'import json, email, sqlite3'` with PYTHONHOME in the mount: cold time and
#      NAR bytes fetched, against the NAR's size;
#   and the mount process's peak RSS against --memory; then the frame-size table: the NAR
#   compressed as independent zstd -3 frames of 1, 2, 4 and 8 MiB (what a seekable .nar.zst
#   is), against one zstd -3 stream (Nix's own .nar.zst).
#
# NAR bytes are counted on the local-directory store through `cachecore serve` in front of it
# (its /metrics: response body bytes of the nar and frame_digests routes), the mount reading
# over HTTP; times are of the mount reading the directory and Garage directly.
#
#   benches/mount.sh                       # COPIES=11 RUNS=3
#   COPIES=1 RUNS=1 benches/mount.sh       # a smoke run (~54 MiB)
#
# Needs fuse3 (fusermount3, /dev/fuse), garage (see .ci/garage), zstd, python3, curl.
set -euo pipefail
cd "$(dirname "$0")/.."
copies="${COPIES:-11}"
runs="${RUNS:-3}"
memory="${MEMORY:-268435456}"
work="${BENCH_DIR:-/tmp/cachecore-bench-mount}"
mkdir -p "$work"
cc="${CACHECORE_BIN:-}"
if [ -z "$cc" ]; then
  nice cargo build --release --locked -p cachecore-cli --quiet
  cc="$PWD/target/release/cachecore"
fi

# 1. The tree: COPIES copies of the Python library, each laid out as a prefix
#    (copyNN/lib/python3.X), so that PYTHONHOME=<copy> runs /usr/bin/python3.X from it (the
#    interpreter the library belongs to, not whichever python3 is first on PATH).
py=$(ls -d /usr/lib/python3.[0-9]* | sort -V | tail -n1)
pyname=$(basename "$py")
#    Every file of copy NN ends with its own line ("# cachecore bench copy NN": a comment to
#    Python; bytes past the end to ELF), so no two copies share a frame: identical copies
#    would, and frames kept in --cache-dir are found by their digest.
tree="$work/tree-distinct-$copies"
if [ ! -d "$tree" ]; then
  for i in $(seq -f %02g 1 "$copies"); do
    mkdir -p "$tree/copy$i/lib"
    cp -a "$py" "$tree/copy$i/lib/$pyname"
    find "$tree/copy$i" -type f -exec sh -c 'for f; do printf "\n# cachecore bench copy %s\n" "$0" >>"$f"; done' "$i" {} +
  done
  chmod -R a+rX "$tree"
fi
# The listing tree: the Python library's names LCOPIES times (default 37: ~55,000 entries),
#    each file cut to its first KiB, for `ls -lR` at the scale the issue names.
lcopies="${LCOPIES:-37}"
names="$work/names-$lcopies"
if [ ! -d "$names" ]; then
  mkdir -p "$names/copy01"
  (cd "$py" && find . -type d -exec mkdir -p "$names/copy01/{}" \; \
    && find . -type l -exec cp -a {} "$names/copy01/{}" \; \
    && find . -type f -exec sh -c 'for f; do head -c 1024 "$f" >"$0/$f"; done' "$names/copy01" {} +)
  for i in $(seq -f %02g 2 "$lcopies"); do cp -a "$names/copy01" "$names/copy$i"; done
  chmod -R a+rX "$names"
fi
name_entries=$(find "$names" | wc -l)
needle=$(cd "$tree/copy01" && find . -type f -size -1100c -size +900c -name '*.py' | sort | head -n1)
needle="copy01/${needle#./}"
entries=$(find "$tree" | wc -l)
echo "tree: $(du -sh "$tree" | cut -f1) in $entries entries; the 1 KiB file: $needle ($(stat -c %s "$tree/$needle") bytes)"

# 2. A signing key; the tree pushed into a local directory and into a private Garage.
rm -f "$work/key.sec"
"$cc" key generate bench-mount-1 --out "$work/key.sec" 2>"$work/key.pub.txt"
public=$("$cc" key public "$work/key.sec")
. benches/garage.sh
start_garage "$work/garage"
pids=()
mounts=()
cleanup() {
  for m in "${mounts[@]}"; do fusermount3 -u -z -q "$m" 2>/dev/null || true; done
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  stop_garage
}
trap cleanup EXIT
dir="$work/cache"
rm -rf "$dir"
"$cc" init "$dir" >/dev/null
path=$("$cc" push "$dir" --add "$tree" --name python-copies --key "$work/key.sec" --quiet)
names_path=$("$cc" push "$dir" --add "$names" --name python-names --key "$work/key.sec" --quiet)
"$cc" init "$store" >/dev/null
"$cc" push "$store" --add "$tree" --name python-copies --key "$work/key.sec" --quiet >/dev/null
"$cc" push "$store" --add "$names" --name python-names --key "$work/key.sec" --quiet >/dev/null
base=${path##*/}
names_base=${names_path##*/}
nar_size=$("$cc" info "$dir" | awk '/^NarBytes/ {print $2}')
echo "pushed $base (NAR $nar_size bytes)"

# `cachecore serve` in front of the directory, for counting bytes.
"$cc" serve "$dir" --listen 127.0.0.1:0 >"$work/serve.out" 2>"$work/serve.log" &
pids+=($!)
for _ in $(seq 100); do grep -q 'listening on' "$work/serve.out" 2>/dev/null && break; sleep 0.1; done
http=$(sed -n 's/.*listening on //p' "$work/serve.out")
served() { # NAR and frame-digest bytes served so far
  curl -s "$http/metrics" | awk '/^cachecore_serve_response_body_bytes_total\{route="(nar|frame_digests)"\}/ {s += $2} END {printf "%d\n", s}'
}

now() { date +%s.%N; }
ms() { python3 -c "import sys; print(f'{(float(sys.argv[2]) - float(sys.argv[1])) * 1000:.1f}')" "$1" "$2"; }

# Mounts STORE on a fresh mountpoint with an empty cache directory (unless told `keep`, for
# a remount that finds what an earlier mount kept there); sets mnt and mount_pid.
mount_fresh() {
  local name=$1 src=$2 keep=${3:-}
  mnt="$work/mnt-$name"
  fusermount3 -u -z -q "$mnt" 2>/dev/null || true
  [ -n "$keep" ] || rm -rf "$work/nars-$name"
  mkdir -p "$mnt"
  "$cc" mount "$src" "$mnt" --trusted-key "$public" --cache-dir "$work/nars-$name" \
    --memory "$memory" 2>"$work/mount-$name.log" &
  mount_pid=$!
  pids+=("$mount_pid")
  mounts+=("$mnt")
  for _ in $(seq 300); do mountpoint -q "$mnt" && return 0; sleep 0.05; done
  echo "mount of $src failed: $(cat "$work/mount-$name.log")" >&2
  exit 1
}
unmount() {
  fusermount3 -u "$mnt"
  wait "$mount_pid" 2>/dev/null || true
}
peak() { awk '/VmHWM/ {printf "%.1f MiB", $2 / 1024}' "/proc/$mount_pid/status"; }
median() { sort -n | awk '{a[NR] = $1} END {print a[int((NR + 1) / 2)]}'; }

for kind in dir garage http; do
  case $kind in
    dir) src="$dir" ;;
    garage) src="$store" ;;
    http) src="$http" ;;
  esac
  echo "== $kind"
  # 1. The 1 KiB file, cold: time to its first byte on a fresh mount, and the whole file.
  ttfb=()
  for _ in $(seq "$runs"); do
    mount_fresh "$kind" "$src"
    before=$(served)
    t0=$(now)
    head -c 1 "$mnt/$base/$needle" >/dev/null
    t1=$(now)
    cmp -s "$mnt/$base/$needle" "$tree/$needle" || { echo "wrong bytes" >&2; exit 1; }
    fetched=$(( $(served) - before ))
    ttfb+=("$(ms "$t0" "$t1")")
    unmount
  done
  whole=()
  for _ in $(seq "$runs"); do
    t0=$(now)
    "$cc" cat --verify "$src" "$path/$needle" >/dev/null
    whole+=("$(ms "$t0" "$(now)")")
  done
  pulls=()
  for _ in $(seq "$runs"); do
    rm -rf "$work/pulled"
    t0=$(now)
    "$cc" pull "$src" "$path" "$work/pulled" --trusted-key "$public"
    pulls+=("$(ms "$t0" "$(now)")")
  done
  rm -rf "$work/pulled"
  t_first=$(printf '%s\n' "${ttfb[@]}" | median)
  t_whole=$(printf '%s\n' "${whole[@]}" | median)
  t_pull=$(printf '%s\n' "${pulls[@]}" | median)
  line="1 KiB file: first byte ${t_first} ms cold | pull ${t_pull} ms: $(python3 -c "print(f'{$t_pull / $t_first:.1f}x')") | cat --verify (whole NAR) ${t_whole} ms: $(python3 -c "print(f'{$t_whole / $t_first:.1f}x')")"
  [ "$kind" = http ] && line="$line | NAR bytes fetched $fetched of $nar_size"
  echo "$line"

  # 3. ls -lR, cold (fresh mount) then warm: of the listing tree, then of the tree read next.
  mount_fresh "$kind" "$src"
  before=$(served)
  t0=$(now); ls -lR "$mnt/$names_base" >/dev/null; t1=$(now)
  ls -lR "$mnt/$names_base" >/dev/null; t2=$(now)
  line="ls -lR ($name_entries entries): cold $(ms "$t0" "$t1") ms | warm $(ms "$t1" "$t2") ms"
  [ "$kind" = http ] && line="$line | NAR bytes fetched $(( $(served) - before ))"
  echo "$line"
  before=$(served)
  t0=$(now); ls -lR "$mnt/$base" >/dev/null; t1=$(now)
  ls -lR "$mnt/$base" >/dev/null; t2=$(now)
  line="ls -lR ($entries entries): cold $(ms "$t0" "$t1") ms | warm $(ms "$t1" "$t2") ms"
  [ "$kind" = http ] && line="$line | NAR bytes fetched $(( $(served) - before ))"
  echo "$line"
  # 2. Every file read, cold (right after the listing) then warm, against local disk.
  t0=$(now); find "$mnt/$base" -type f -print0 | xargs -0 cat >/dev/null; t1=$(now)
  find "$mnt/$base" -type f -print0 | xargs -0 cat >/dev/null; t2=$(now)
  find "$tree" -type f -print0 | xargs -0 cat >/dev/null
  t3=$(now); find "$tree" -type f -print0 | xargs -0 cat >/dev/null; t4=$(now)
  echo "find | xargs cat: cold $(ms "$t0" "$t1") ms | pull/cold $(python3 -c "print(f'{$t_pull / 1000 / ($t1 - $t0):.2f}x')") | warm $(ms "$t1" "$t2") ms | local disk $(ms "$t3" "$t4") ms | warm/disk $(python3 -c "print(f'{($t4 - $t3) / ($t2 - $t1):.2f}x')")"
  echo "peak RSS of the mount: $(peak) (--memory $((memory >> 20)) MiB)"
  unmount
  # Mounted again on the same --cache-dir: every frame comes from there (hashed again), none
  # from the store.
  mount_fresh "$kind" "$src" keep
  before=$(served)
  ls -lR "$mnt/$base" >/dev/null
  t0=$(now); find "$mnt/$base" -type f -print0 | xargs -0 cat >/dev/null; t1=$(now)
  line="find | xargs cat after a remount (frames from --cache-dir): $(ms "$t0" "$t1") ms | $(ls "$work/nars-$kind" | grep -c '^frame-') frames kept"
  [ "$kind" = http ] && line="$line | NAR bytes fetched $(( $(served) - before ))"
  echo "$line"
  unmount

  # 4. Python from the mount, cold.
  mount_fresh "$kind" "$src"
  before=$(served)
  t0=$(now)
  PYTHONHOME="$mnt/$base/copy01" "/usr/bin/$pyname" -c 'import json, email, sqlite3'
  t1=$(now)
  line="python3 -c 'import json, email, sqlite3': cold $(ms "$t0" "$t1") ms"
  [ "$kind" = http ] && line="$line | NAR bytes fetched $(( $(served) - before )) of $nar_size"
  echo "$line"
  unmount
done

# 5. The frame-size table.
"$cc" nar pack "$tree" >"$work/tree.nar"
whole=$(zstd -3 -q -c "$work/tree.nar" | wc -c)
echo "== frame size (independent zstd -3 frames) against one zstd -3 stream ($whole bytes)"
for mib in 1 2 4 8; do
  rm -rf "$work/split" && mkdir "$work/split"
  split -b "${mib}M" "$work/tree.nar" "$work/split/f"
  total=0
  for f in "$work"/split/f*; do total=$((total + $(zstd -3 -q -c "$f" | wc -c))); done
  python3 -c "print(f'{$mib} MiB frames: {$total} bytes, {100 * $total / $whole:.1f}% of one stream, one frame fetched for a 1 KiB file: ~{$total // max(1, $(ls "$work"/split | wc -l))} bytes')"
done
rm -rf "$work/split" "$work/tree.nar"
