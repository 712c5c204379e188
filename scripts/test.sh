#!/usr/bin/env bash
# Runs every check and test: formatting, clippy, unit, property and integration tests (which drive the
# real binary and check its outputs with sfdisk, sgdisk, fsck.fat, e2fsck, mkimage, bmaptool, QEMU, ...).
# Needs root (loop devices, mounts, FUSE, binfmt_misc): a test whose real check cannot run fails, it is
# never skipped. Needs the tools scripts/install-deps.sh installs; it checks them first.
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$(id -u)" = 0 ] || { echo "scripts/test.sh: run as root (loop devices, mounts, FUSE); tests needing root would fail" >&2; exit 1; }
scripts/install-deps.sh --check
cargo fmt --all -- --check
cargo clippy --all-targets -- -D warnings
# The library as the fuzz crate builds it: no command line, no HTTP client.
cargo clippy --lib --no-default-features -- -D warnings
# Every test binary runs even after one fails, so that one run reports every failure.
cargo test --all-targets --no-fail-fast
# The real-kernel Kconfig tests are #[ignore]d for a plain `cargo test` (they fetch Debian's
# linux-source-6.1 once, ~140 MB, into .cache/linux-source); here they run.
cargo test --test kconfig_kernel -- --include-ignored
# Every test binary ran; what remains ignored is opt-in by design, listed so that nothing hides:
# the kernel cross build (tests/kernel_build.rs) and the xfce + droidmote root filesystem (tests/rootfs_debian.rs).
