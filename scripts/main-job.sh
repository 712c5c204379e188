#!/usr/bin/env bash
# The main job on the embedded default board: assemble a minimal root filesystem from Debian's packages
# (kernel, device trees, U-Boot, busybox initramfs) and build the board's image into out/.
set -euo pipefail
cd "$(dirname "$0")/.."
BOARD="${BOARD:-cubieboard}"
cargo build --release --quiet
scripts/minimal-rootfs.sh "$BOARD" ".cache/rootfs-$BOARD"
target/release/boardsmith build "$BOARD" --rootfs ".cache/rootfs-$BOARD.tar" -o out
