#!/usr/bin/env bash
# Installs every system package boardsmith and its tests need on Debian 12 (bookworm) or newer.
# Idempotent; run as root (or through sudo). Adds bookworm-backports for e2fsprogs >= 1.47.1 and QEMU 10.
set -euo pipefail
SUDO=""
[ "$(id -u)" = 0 ] || SUDO="sudo"
export DEBIAN_FRONTEND=noninteractive

. /etc/os-release
if [ "${VERSION_CODENAME:-}" = bookworm ]; then
  if ! grep -rqs "bookworm-backports" /etc/apt/sources.list /etc/apt/sources.list.d/; then
    mirror=$(grep -rhoE 'https?://[^ ]+/debian/?' /etc/apt/sources.list /etc/apt/sources.list.d/ 2>/dev/null \
      | grep -v security | head -n1)
    mirror=${mirror:-http://deb.debian.org/debian}
    printf 'Types: deb\nURIs: %s\nSuites: bookworm-backports\nComponents: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n' \
      "$mirror" | $SUDO tee /etc/apt/sources.list.d/bookworm-backports.sources >/dev/null
  fi
  BPO=(-t bookworm-backports)
else
  BPO=()
fi
for a in armhf arm64; do
  dpkg --print-foreign-architectures | grep -qx "$a" || $SUDO dpkg --add-architecture "$a"
done
# A foreign-architecture index can fail transiently (seen: bookworm-security armhf); what matters is
# that the packages below can be found, which apt-get install checks.
$SUDO apt-get update || echo "apt-get update reported errors; continuing, install will tell" >&2

$SUDO apt-get install -y --no-install-recommends "${BPO[@]}" e2fsprogs qemu-system-arm qemu-system-data \
  ipxe-qemu qemu-efi-aarch64
$SUDO apt-get install -y --no-install-recommends \
  build-essential pkg-config ca-certificates curl git \
  fdisk gdisk dosfstools mtools u-boot-tools device-tree-compiler \
  cgpt vboot-kernel-utils vboot-utils \
  bmap-tools genimage hyperfine \
  xz-utils zstd gzip bzip2 p7zip-full cpio libarchive13 \
  mmdebstrap debootstrap qemu-user-static binfmt-support arch-test openssl \
  u-boot-qemu python3 python3-fusepy busybox-static \
  bc bison flex libssl-dev libelf-dev kmod perl \
  gcc-arm-linux-gnueabihf gcc-aarch64-linux-gnu

# Foreign-architecture chroots (boardsmith rootfs) run ARM programs through qemu-user: binfmt_misc must be
# mounted and the QEMU handlers registered (a fresh container often has it unmounted).
if [ ! -e /proc/sys/fs/binfmt_misc/status ]; then
  $SUDO mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc || echo "could not mount binfmt_misc" >&2
fi
$SUDO update-binfmts --enable qemu-arm >/dev/null 2>&1 || true
$SUDO update-binfmts --enable qemu-aarch64 >/dev/null 2>&1 || true
