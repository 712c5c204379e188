#!/usr/bin/env bash
# fresh-machine-check.sh [--layout stock|oneline|backports] [--suite bookworm|trixie] [--main-job] [--keep]
#
# Proves the README's first command on a machine that has never seen this project: builds a minimal Debian
# root with mmdebstrap (--variant=minbase, like the official container image), lays out its apt sources like a
# stock machine, copies the checkout in (git archive of the working tree's tracked files), runs
# scripts/install-deps.sh inside it (chroot with /proc, /sys and /dev), runs it a second time (it must be
# idempotent), and checks every tool the tests use (install-deps.sh --check, one list). With --main-job it
# then runs scripts/main-job.sh in the same root (build the default board's image and boot it in QEMU), with
# the host's Rust toolchain (the README asks for rustup's; it is not a Debian package) mounted read-only.
#
# Layouts of /etc/apt (the thing that broke before):
#   stock      deb822 /etc/apt/sources.list.d/debian.sources with a comment line holding another URL above
#              each URIs: line, no /etc/apt/sources.list (the official Debian 12 image), plus a .disabled file
#   oneline    a classic one-line /etc/apt/sources.list and nothing in sources.list.d
#   backports  stock, with bookworm-backports already configured (as a user may have done)
#
# Runs as root. Downloaded .debs are kept in .cache/fresh-machine/ARCHIVES between runs (they are only
# downloads: apt resolves and verifies everything afresh). Prints the time of each step.
set -euo pipefail
export LC_ALL=C
cd "$(dirname "$0")/.."
REPO=$PWD

LAYOUT=stock SUITE=bookworm MAIN_JOB=0 KEEP=0
while [ $# -gt 0 ]; do
  case "$1" in
    --layout) LAYOUT=$2; shift 2 ;;
    --suite) SUITE=$2; shift 2 ;;
    --main-job) MAIN_JOB=1; shift ;;
    --keep) KEEP=1; shift ;;
    *) echo "usage: $0 [--layout stock|oneline|backports] [--suite bookworm|trixie] [--main-job] [--keep]" >&2; exit 2 ;;
  esac
done
case "$LAYOUT" in stock | oneline | backports) ;; *) echo "unknown layout $LAYOUT" >&2; exit 2 ;; esac
case "$SUITE" in bookworm | trixie) ;; *) echo "unknown suite $SUITE" >&2; exit 2 ;; esac
[ "$(id -u)" = 0 ] || { echo "fresh-machine-check: needs root (chroot, mounts)" >&2; exit 1; }
command -v mmdebstrap >/dev/null || { echo "fresh-machine-check: mmdebstrap is missing (apt-get install mmdebstrap)" >&2; exit 1; }

say() { printf '[fresh %4ss] %s\n' "$SECONDS" "$*" >&2; }
# The main archive this host uses (a stock machine would have deb.debian.org).
MIRROR=$(apt-get indextargets --no-release-info --format '$(TARGET_OF) $(REPO_URI) $(RELEASE)' 2>/dev/null \
  | awk '$1 == "deb" && $3 ~ /^(bookworm|trixie)$/ { print $2; exit }')
MIRROR=${MIRROR:-http://deb.debian.org/debian/}
MIRROR=${MIRROR%/}
SECURITY=${MIRROR%/debian}/debian-security

# Say it before starting, not as a tar error half-way: the root with every package takes about 2.5 GB, and the
# main job (release build, kernel packages, image) about 3 GB more.
NEED_GB=$((MAIN_JOB ? 6 : 3))
AVAIL_GB=$(( $(df --output=avail -B1 /var/tmp | tail -n 1) / 1000000000 ))
if [ "$AVAIL_GB" -lt "$NEED_GB" ]; then
  echo "fresh-machine-check: needs about $NEED_GB GB free in /var/tmp, $AVAIL_GB GB are; free some space and run it again" >&2
  exit 1
fi
ROOT=$(mktemp -d /var/tmp/boardsmith-fresh.XXXXXX)
CACHE="$REPO/.cache/fresh-machine/$SUITE"
mkdir -p "$CACHE"
cleanup() {
  local rc=$?
  # Everything mounted below ROOT, deepest first (binfmt_misc inside proc, dev/pts inside dev, ...).
  findmnt -rn -o TARGET | grep -F "$ROOT/" | sort -r | while read -r m; do umount -l "$m" 2>/dev/null || true; done
  if [ "$KEEP" = 1 ]; then say "kept $ROOT"; else rm -rf --one-file-system "$ROOT"; fi
  [ "$rc" = 0 ] && say "PASS (layout $LAYOUT, suite $SUITE)" || say "FAIL (status $rc, layout $LAYOUT, suite $SUITE)"
  exit "$rc"
}
trap cleanup EXIT

say "mmdebstrap --variant=minbase $SUITE from $MIRROR into $ROOT"
mmdebstrap --quiet --variant=minbase --skip=cleanup/apt/lists "$SUITE" "$ROOT" "$MIRROR" >&2
say "minimal root built ($(du -sm "$ROOT" | cut -f1) MB)"

# ---- apt sources laid out like the machine being imitated ----
rm -f "$ROOT/etc/apt/sources.list" "$ROOT"/etc/apt/sources.list.d/*
stock_sources() { # SUITE
  cat <<EOF
Types: deb
# http://snapshot.debian.org/archive/debian/20250520T000000Z
URIs: $MIRROR
Suites: $1 $1-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
# http://snapshot.debian.org/archive/debian-security/20250520T000000Z
URIs: $SECURITY
Suites: $1-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOF
}
case "$LAYOUT" in
  stock | backports)
    stock_sources "$SUITE" >"$ROOT/etc/apt/sources.list.d/debian.sources"
    # A disabled file naming an unreachable host: apt ignores it, and so must install-deps.
    printf 'deb http://unreachable.invalid/debian %s-backports main\n' "$SUITE" \
      >"$ROOT/etc/apt/sources.list.d/old-backports.list.disabled"
    ;;
  oneline)
    printf 'deb %s %s main\ndeb %s %s-updates main\ndeb %s %s-security main\n' \
      "$MIRROR" "$SUITE" "$MIRROR" "$SUITE" "$SECURITY" "$SUITE" >"$ROOT/etc/apt/sources.list"
    ;;
esac
if [ "$LAYOUT" = backports ]; then
  printf 'Types: deb\nURIs: %s\nSuites: %s-backports\nComponents: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n' \
    "$MIRROR" "$SUITE" >"$ROOT/etc/apt/sources.list.d/backports.sources"
fi
[ ! -e "$ROOT/etc/apt/sources.list" ] || [ "$LAYOUT" = oneline ]

# ---- the checkout, as git would give it to a stranger ----
mkdir -p "$ROOT/root/boardsmith"
rev=$(git -C "$REPO" stash create 2>/dev/null || true)
git -C "$REPO" archive --format=tar "${rev:-HEAD}" | tar -x -C "$ROOT/root/boardsmith"

# ---- mounts ----
mount -t proc proc "$ROOT/proc"
mount --rbind /sys "$ROOT/sys" && mount --make-rslave "$ROOT/sys"
mount --rbind /dev "$ROOT/dev" && mount --make-rslave "$ROOT/dev"
mkdir -p "$ROOT/var/cache/apt/archives"
mount --bind "$CACHE" "$ROOT/var/cache/apt/archives"
cp /etc/resolv.conf "$ROOT/etc/resolv.conf"
# The network, not the machine: certificate authorities this host added locally (a proxy that inspects
# TLS, as on corporate networks and this project's build machines) go where a stranger's machine on that
# network would have them; ca-certificates, installed by install-deps, adds them to the system store.
if compgen -G '/usr/local/share/ca-certificates/*.crt' >/dev/null; then
  mkdir -p "$ROOT/usr/local/share/ca-certificates"
  cp /usr/local/share/ca-certificates/*.crt "$ROOT/usr/local/share/ca-certificates/"
  say "local certificate authorities of this network: $(cd /usr/local/share/ca-certificates && echo *.crt)"
fi
in_root() { chroot "$ROOT" /usr/bin/env -i HOME=/root TERM=dumb PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin "$@"; }

say "install-deps.sh (first run)"
t0=$SECONDS
in_root bash -c 'cd /root/boardsmith && scripts/install-deps.sh' >"$ROOT/install-1.log" 2>&1 \
  || { tail -n 40 "$ROOT/install-1.log" >&2; say "install-deps.sh failed (log above)"; exit 1; }
say "install-deps.sh: exit 0 in $((SECONDS - t0)) s"
grep '^install-deps:' "$ROOT/install-1.log" >&2 || true

say "install-deps.sh (second run: idempotent)"
t0=$SECONDS
in_root bash -c 'cd /root/boardsmith && scripts/install-deps.sh' >"$ROOT/install-2.log" 2>&1 \
  || { tail -n 40 "$ROOT/install-2.log" >&2; say "second install-deps.sh run failed"; exit 1; }
grep -q '^0 upgraded, 0 newly installed' "$ROOT/install-2.log" \
  || { grep -E 'upgraded|newly installed' "$ROOT/install-2.log" >&2; say "the second run installed something"; exit 1; }
say "second run: exit 0 in $((SECONDS - t0)) s, nothing new installed"

in_root bash -c 'cd /root/boardsmith && scripts/install-deps.sh --check'
if [ "$SUITE" = bookworm ]; then
  backports=$(in_root apt-get indextargets --no-release-info --format '$(TARGET_OF) $(REPO_URI) $(RELEASE)' \
    | awk '$1 == "deb" && $3 == "bookworm-backports" { print $2 }' | sort -u)
  say "bookworm-backports from: $(echo $backports)"
  case "$backports" in *unreachable.invalid*) say "a disabled file's URL was used"; exit 1 ;; esac
  [ "$(echo "$backports" | wc -l)" = 1 ] || { say "backports configured more than once"; exit 1; }
fi

if [ "$MAIN_JOB" = 1 ]; then
  # The README's prerequisite that is not a Debian package: a Rust toolchain from rustup, here the host's.
  toolchain=$(rustc --print sysroot)
  mkdir -p "$ROOT/opt/rust"
  mount --bind "$toolchain" "$ROOT/opt/rust" && mount -o remount,bind,ro "$ROOT/opt/rust"
  mkdir -p "$ROOT/root/.cargo/registry" "${CARGO_HOME:-$HOME/.cargo}/registry"
  mount --bind "${CARGO_HOME:-$HOME/.cargo}/registry" "$ROOT/root/.cargo/registry"
  say "scripts/main-job.sh (release build, cubieboard image, QEMU boot)"
  t0=$SECONDS
  in_root bash -c 'export PATH=/opt/rust/bin:$PATH CARGO_HOME=/root/.cargo; cd /root/boardsmith && scripts/main-job.sh' \
    >"$ROOT/main-job.log" 2>&1 || { tail -n 40 "$ROOT/main-job.log" >&2; say "main-job.sh failed"; exit 1; }
  grep -q BOARDSMITH-ROOT-OK "$ROOT/root/boardsmith/out/cubieboard.boot.log" \
    || { say "the boot log has no BOARDSMITH-ROOT-OK"; exit 1; }
  say "main-job.sh: exit 0 in $((SECONDS - t0)) s, the image booted"
fi
