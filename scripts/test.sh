#!/usr/bin/env bash
# Runs every check and test: formatting, clippy, unit, property and integration tests (which drive the
# real binary and check its outputs with sfdisk, sgdisk, fsck.fat, e2fsck, mkimage, bmaptool, ...).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo fmt --all -- --check
cargo clippy --all-targets -- -D warnings
cargo test --all-targets
