#!/usr/bin/env bash
# The main job on the embedded default board: assemble a minimal root filesystem from Debian's packages
# (kernel, device trees, U-Boot, busybox initramfs), build the board's image into out/, and boot it in
# QEMU until the root filesystem's init prints its marker (the console is also kept in out/BOARD.boot.log).
set -euo pipefail
cd "$(dirname "$0")/.."
BOARD="${BOARD:-cubieboard}"
# The release build, the board's Debian packages and its image take about 3 GB: say so up front.
AVAIL_GB=$(( $(df --output=avail -B1 . | tail -n 1) / 1000000000 ))
if [ "$AVAIL_GB" -lt 3 ]; then
  echo "main-job: needs about 3 GB free in $PWD, $AVAIL_GB GB are; free some space and run it again" >&2
  exit 1
fi
cargo build --release --quiet
scripts/minimal-rootfs.sh "$BOARD" ".cache/rootfs-$BOARD"
target/release/boardsmith build "$BOARD" --rootfs ".cache/rootfs-$BOARD.tar" -o out
target/release/boardsmith boot "out/$BOARD.img" --expect BOARDSMITH-ROOT-OK --timeout 300 \
  --log "out/$BOARD.boot.log"
