#!/usr/bin/env bash
# minimal-rootfs.sh BOARD OUT
#
# Assembles a minimal root filesystem for BOARD from Debian's own packages, without root and without
# running foreign binaries: the board's kernel package (zImage/Image, device trees, modules), its U-Boot
# package, and busybox-static. It adds an initramfs (busybox + the modules the board's root medium needs,
# derived from its device tree by `boardsmith initramfs-modules`, plus the profile's
# kernel.initramfs_modules, with their dependencies) whose /init mounts the root partition named by
# root=PARTUUID=... and switches to it, and a /sbin/init on the root filesystem that prints
#   BOARDSMITH-ROOT-OK
# on the console, then offers a shell. Writes the tree to OUT/ and a reproducible tarball to OUT.tar.
# Downloads are cached in .cache/debs/ARCH (set DEB_CACHE to move it).
set -euo pipefail
export LC_ALL=C
BOARD="$1"
OUT="$2"
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
BIN="${BOARDSMITH:-$ROOT/target/release/boardsmith}"
[ -x "$BIN" ] || BIN="$ROOT/target/debug/boardsmith"
[ -x "$BIN" ] || { echo "build boardsmith first (cargo build --release)" >&2; exit 1; }
EPOCH="${SOURCE_DATE_EPOCH:-1700000000}"

read -r ARCH KPKG BLPKG < <("$BIN" show "$BOARD" --json | python3 -c '
import json, sys
p = json.load(sys.stdin)["profile"]
bl = (p.get("bootloader") or {}).get("package") or "-"
print(p["arch"], p["kernel"]["package"], bl)')

CACHE="${DEB_CACHE:-$ROOT/.cache/debs}/$ARCH"
mkdir -p "$CACHE"
# The kernel metapackage depends on the versioned image package: fetch that one.
KVER_PKG=$(apt-cache depends "$KPKG:$ARCH" 2>/dev/null | awk '/Depends: linux-image-[0-9]/ { print $2; exit }')
KVER_PKG="${KVER_PKG%%:*}"
[ -n "$KVER_PKG" ] || { echo "cannot resolve $KPKG:$ARCH; run: dpkg --add-architecture $ARCH && apt-get update" >&2; exit 1; }
PKGS=("$KVER_PKG:$ARCH" "busybox-static:$ARCH")
[ "$BLPKG" = "-" ] || PKGS+=("$BLPKG:$ARCH")
for p in "${PKGS[@]}"; do
  name="${p%%:*}"
  if ! ls "$CACHE/${name}"_*.deb >/dev/null 2>&1; then
    (cd "$CACHE" && apt-get download -q "$p" 2>&1 | grep -v "^W: Download is performed unsandboxed" >&2 || true)
    ls "$CACHE/${name}"_*.deb >/dev/null 2>&1 || { echo "download of $p failed" >&2; exit 1; }
  fi
done

rm -rf "$OUT" "$OUT.initramfs"
mkdir -p "$OUT"
for deb in "$CACHE"/*.deb; do
  dpkg-deb -x "$deb" "$OUT"
done
KVER=$(ls "$OUT/lib/modules" | head -n1)
depmod -b "$OUT" "$KVER"

# ---- initramfs ----
I="$OUT.initramfs"
mkdir -p "$I/bin" "$I/dev" "$I/proc" "$I/sys" "$I/newroot" "$I/lib/modules/$KVER"
cp "$OUT/bin/busybox" "$I/bin/busybox"
: >"$I/modules"
# The modules, dependencies first, as boardsmith derives them from this tree (device tree, modules.alias,
# modules.dep, modules.softdep); unresolved providers are shown, not fatal.
"$BIN" initramfs-modules "$BOARD" --rootfs "$OUT" --json >"$OUT.modules.json"
python3 - "$OUT.modules.json" >"$OUT.modules" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
for n in r["modules"]:
    print(n["module"] + " <- " + " <- ".join(n["chain"]), file=sys.stderr)
for u in r["unresolved"]:
    print("unresolved: " + u["what"] + ": " + u["reason"], file=sys.stderr)
for w in r["warnings"]:
    print("warning: " + w, file=sys.stderr)
for p in r["all_load_order"]:
    print(p)
PY
while read -r path; do
  mkdir -p "$I/lib/modules/$KVER/$(dirname "$path")"
  cp "$OUT/lib/modules/$KVER/$path" "$I/lib/modules/$KVER/$path"
  echo "$path" >>"$I/modules"
done <"$OUT.modules"
rm -f "$OUT.modules" "$OUT.modules.json"

cat >"$I/init" <<'INIT'
#!/bin/busybox sh
# boardsmith minimal initramfs: load the root device's modules, find root=PARTUUID=..., switch to it.
bb=/bin/busybox
$bb mount -t proc proc /proc
$bb mount -t sysfs sysfs /sys
$bb mount -t devtmpfs devtmpfs /dev
echo "boardsmith-initramfs: loading $($bb wc -l </modules) modules"
for m in $($bb cat /modules); do
  $bb insmod "/lib/modules/$($bb uname -r)/$m" || echo "boardsmith-initramfs: insmod $m failed"
done
want=$($bb sed -n 's/.*root=PARTUUID=\([^ ]*\).*/\1/p' /proc/cmdline | $bb tr A-F a-f)
partuuid() { # partition block name -> its PARTUUID (MBR: disksig-NN; GPT: entry GUID)
  p=$1; n=$($bb cat /sys/class/block/$p/partition); disk=$($bb basename $($bb readlink -f /sys/class/block/$p/..))
  if [ "$($bb hexdump -s 450 -n 1 -e '1/1 "%02x"' /dev/$disk)" = ee ]; then
    lba=$($bb hexdump -s 584 -n 4 -e '1/4 "%u"' /dev/$disk)
    off=$(( lba * 512 + (n - 1) * 128 + 16 ))
    $bb hexdump -s $off -n 16 -e '1/4 "%08x" "-" 1/2 "%04x" "-" 1/2 "%04x" "-" 2/1 "%02x" "-" 6/1 "%02x"' /dev/$disk
  else
    printf '%s-%02x' "$($bb hexdump -s 440 -n 4 -e '1/4 "%08x"' /dev/$disk)" "$n"
  fi
}
# Wait for the root device up to rootdelay= seconds (default 20): a wrong root fails in bounded time.
limit=$($bb sed -n 's/.*rootdelay=\([0-9][0-9]*\).*/\1/p' /proc/cmdline)
end=$(( $($bb date +%s) + ${limit:-20} ))
root=""
while [ -z "$root" ]; do
  for p in /sys/class/block/*; do
    p=${p##*/}
    [ -e /sys/class/block/$p/partition ] || continue
    [ "$(partuuid $p)" = "$want" ] && root=/dev/$p
  done
  [ -n "$root" ] || [ "$($bb date +%s)" -lt "$end" ] || break
  [ -n "$root" ] || $bb sleep 0.2
done
if [ -z "$root" ]; then
  echo "boardsmith-initramfs: root PARTUUID=$want not found; block devices: $($bb ls /sys/class/block | $bb tr '\n' ' ')"
  echo "boardsmith-initramfs: root not mounted"
  exec $bb sh
fi
echo "boardsmith-initramfs: mounting $root (PARTUUID=$want)"
if ! $bb mount -t ext4 -o ro "$root" /newroot; then
  echo "boardsmith-initramfs: root not mounted"
  exec $bb sh
fi
$bb umount /proc /sys
$bb mount --move /dev /newroot/dev 2>/dev/null || $bb umount /dev
exec $bb switch_root /newroot /sbin/init
INIT
chmod 755 "$I/init"
mkdir -p "$OUT/boot"
(cd "$I" && find . -mindepth 1 | sort | cpio --quiet -o -H newc --reproducible -R 0:0) | gzip -9n >"$OUT/boot/initrd.img-$KVER"
rm -rf "$I"

# ---- the root filesystem's init ----
mkdir -p "$OUT/sbin" "$OUT/proc" "$OUT/sys" "$OUT/dev" "$OUT/tmp" "$OUT/root"
rm -f "$OUT/sbin/init"
cat >"$OUT/sbin/init" <<'INIT'
#!/bin/busybox sh
bb=/bin/busybox
$bb mount -t proc proc /proc 2>/dev/null
$bb mount -t sysfs sysfs /sys 2>/dev/null
echo "BOARDSMITH-ROOT-OK: init running from the root filesystem ($($bb awk '$2 == "/" { print $1 }' /proc/mounts | $bb tail -n1)), kernel $($bb uname -r)"
exec $bb sh
INIT
chmod 755 "$OUT/sbin/init"

# Reproducible tarball: sorted, numeric owners 0:0, clamped mtimes, every parent directory present.
tar --sort=name --numeric-owner --owner=0 --group=0 --mtime="@$EPOCH" --clamp-mtime \
  --format=gnu -C "$OUT" -cf "$OUT.tar.partial" .
mv "$OUT.tar.partial" "$OUT.tar"
echo "$OUT.tar: $BOARD ($ARCH) minimal root filesystem, kernel $KVER" >&2
