#!/usr/bin/env bash
# The main job on the embedded default board: assemble a minimal root filesystem from Debian's packages
# (kernel, device trees, U-Boot, busybox initramfs), build the board's image into out/, and boot it in
# QEMU until the root filesystem's init prints its marker (the console is also kept in out/BOARD.boot.log).
set -euo pipefail
cd "$(dirname "$0")/.."
BOARD="${BOARD:-cubieboard}"
cargo build --release --quiet
scripts/minimal-rootfs.sh "$BOARD" ".cache/rootfs-$BOARD"
target/release/boardsmith build "$BOARD" --rootfs ".cache/rootfs-$BOARD.tar" -o out
target/release/boardsmith boot "out/$BOARD.img" --expect BOARDSMITH-ROOT-OK --timeout 300 \
  --log "out/$BOARD.boot.log"
