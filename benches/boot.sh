#!/usr/bin/env bash
# benches/boot.sh [BOARD...]: time from start to the root filesystem's BOARDSMITH-ROOT-OK marker, per board:
#   - `boardsmith boot` on out/BOARD.img (what users and CI run; includes the padded copy for SD boards),
#   - bare QEMU with DESIGN.md's command on a padded copy, stopped when grep sees the marker (the peer),
#   - for U-Boot-on-SD boards, `boardsmith boot` on a copy without uboot.env (U-Boot's built-in environment:
#     2 s autoboot delay and a USB scan), to show what the environment file saves.
# Builds missing images with scripts/minimal-rootfs.sh + boardsmith build. Needs hyperfine. RUNS=3 by default.
set -euo pipefail
SELF="$(cd "$(dirname "$0")" && pwd)/$(basename "$0")"
cd "$(dirname "$0")/.."
MARKER=BOARDSMITH-ROOT-OK
if [ "${1:-}" = "--raw" ]; then # --raw QEMU-COMMAND...: run until the marker, then stop QEMU
  shift
  fifo=$(mktemp -u)
  mkfifo "$fifo"
  "$@" >"$fifo" 2>/dev/null </dev/null &
  pid=$!
  grep -a -m1 -q "$MARKER" <"$fifo" || true
  kill "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
  rm -f "$fifo"
  exit 0
fi
RUNS=${RUNS:-3}
BIN=target/release/boardsmith
cargo build --release --quiet
W=$(mktemp -d)
trap 'rm -rf "$W"' EXIT
BOARDS=("$@")
[ ${#BOARDS[@]} -gt 0 ] || BOARDS=(cubieboard mk802 armv8-foundation)
for b in "${BOARDS[@]}"; do
  if [ ! -f "out/$b.img" ]; then
    scripts/minimal-rootfs.sh "$b" ".cache/rootfs-$b"
    "$BIN" build "$b" --rootfs ".cache/rootfs-$b.tar" -o out --progress none
  fi
  boot="$BIN boot out/$b.img --expect $MARKER --timeout 300 -q"
  case "$b" in
    armv8-foundation)
      raw="qemu-system-aarch64 -M virt -cpu cortex-a57 -m 1G -display none -monitor none -serial stdio -bios /usr/lib/u-boot/qemu_arm64/u-boot.bin -drive if=virtio,format=raw,file=out/$b.img,snapshot=on"
      hyperfine --runs "$RUNS" --export-markdown "$W/$b.md" -n "boardsmith boot $b" "$boot" \
        -n "bare QEMU $b" "$SELF --raw $raw"
      ;;
    *)
      cp --sparse=always "out/$b.img" "$W/$b.img"
      truncate -s 512M "$W/$b.img"
      cp --sparse=always "out/$b.img" "$W/$b-noenv.img"
      mdel -i "$W/$b-noenv.img@@1M" ::/uboot.env
      raw="qemu-system-arm -M cubieboard -m 1G -display none -monitor none -serial stdio -drive if=sd,format=raw,file=$W/$b.img,snapshot=on"
      hyperfine --runs "$RUNS" --export-markdown "$W/$b.md" -n "boardsmith boot $b" "$boot" \
        -n "bare QEMU $b" "$SELF --raw $raw" \
        -n "boardsmith boot $b without uboot.env" "$BIN boot $W/$b-noenv.img --board $b --expect $MARKER --timeout 300 -q"
      ;;
  esac
  cat "$W/$b.md"
done
