#!/usr/bin/env bash
# Runs every check and test: formatting, clippy, unit, property and integration tests (which drive the
# real binary and check its outputs with sfdisk, sgdisk, fsck.fat, e2fsck, mkimage, bmaptool, ...).
set -euo pipefail
cd "$(dirname "$0")/.."
# Real-kernel Kconfig tests (tests/kconfig_kernel.rs): scripts/linux-source.sh fetches Debian's
# linux-source-6.1 (~140 MB) once into .cache/linux-source. Set to 0 to skip them.
export BOARDSMITH_KERNEL_TESTS=${BOARDSMITH_KERNEL_TESTS:-1}
cargo fmt --all -- --check
cargo clippy --all-targets -- -D warnings
cargo test --all-targets
