#!/usr/bin/env bash
# release.sh [IMAGE]
#
# Compression time per format of `boardsmith release` against the reference CLIs at the same levels and
# thread count, in the same hyperfine run: xz -6 -T2 (16 MiB blocks), zstd -10 -T2, 7z a -mx=5 -mmt=2.
# Default image: the main job's out/cubieboard.img (minimal Debian kernel + U-Boot root filesystem).
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
IMG="${1:-$ROOT/out/cubieboard.img}"
W="$ROOT/.cache/bench-release"
BS="$ROOT/target/release/boardsmith"
cargo build --release --quiet --manifest-path "$ROOT/Cargo.toml"
[ -f "$IMG" ] || "$ROOT/scripts/main-job.sh"
mkdir -p "$W"
echo "image: $IMG ($(stat -c %s "$IMG") bytes, $(du -h "$IMG" | cut -f1) allocated)"
run() { # FORMAT
  echo "$BS release cubieboard --image $IMG -o $W/bs --compress $1 --threads 2 --progress none"
}
hyperfine --runs "${RUNS:-3}" --export-markdown "$W/release.md" --prepare "rm -rf $W/bs $W/peer; mkdir -p $W/peer" \
  -n "boardsmith release --compress xz (-6, 16 MiB blocks, 2 threads)" "$(run xz)" \
  -n "xz -6 -T2 --block-size=16MiB" "xz -6 -T2 --block-size=16MiB -c $IMG > $W/peer/x.xz" \
  -n "boardsmith release --compress zst (-10, 2 threads)" "$(run zst)" \
  -n "zstd -10 -T2" "zstd -q -10 -T2 -c $IMG > $W/peer/x.zst" \
  -n "boardsmith release --compress 7z (-mx5, 2 threads)" "$(run 7z)" \
  -n "7z a -mx=5 -mmt=2" "7z a -bd -bso0 -t7z -m0=lzma2 -mx=5 -mmt=2 $W/peer/x.7z $IMG"
cat "$W/release.md"
for f in "$W"/peer/*; do echo "peer $(basename "$f"): $(stat -c %s "$f") bytes"; done
