#!/usr/bin/env bash
# build-vs-genimage.sh [WORKDIR]
#
# Benchmarks `boardsmith build cubieboard` against genimage (Debian's package) building the same layout
# (MBR, U-Boot SPL at 8 KiB, 128 MiB FAT boot partition with kernel/initrd/DTB/extlinux.conf, ext4 root
# filling a 2 GiB image) from the same ~1 GiB root filesystem tree, side by side with hyperfine, and reports
# peak memory (/usr/bin/time -v) of boardsmith for a 250 MiB and a 1 GiB tree.
#
# The tree: the minimal cubieboard root filesystem (real Debian kernel, modules, U-Boot; scripts/minimal-rootfs.sh)
# plus ~800 MiB of generated content of mixed compressibility (AES-CTR keystream, deterministic).
# genimage does less than boardsmith here: no bmap and no sums. The "genimage + bmap + sums" row adds
# `bmaptool create`, `sha256sum` and `md5sum` so both produce the same set of artefacts.
# BASELINE (another boardsmith binary, e.g. a release build of an earlier commit) adds its build of the same
# tree to the same interleaved rounds, for before/after comparisons; RUNS sets the rounds (default 5).
set -euo pipefail
export LC_ALL=C
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
W="${1:-$ROOT/.cache/bench-build}"
BS="$ROOT/target/release/boardsmith"
mkdir -p "$W"
W="$(cd "$W" && pwd)"
cargo build --release --quiet --manifest-path "$ROOT/Cargo.toml"
[ -f "$ROOT/.cache/rootfs-cubieboard.tar" ] || "$ROOT/scripts/minimal-rootfs.sh" cubieboard "$ROOT/.cache/rootfs-cubieboard"

prng() { # NAME BYTES
  local h; h=$(printf 'boardsmith-bench/%s' "$1" | sha256sum)
  head -c "$2" /dev/zero | openssl enc -aes-128-ctr -K "${h:0:32}" -iv "${h:32:32}" -nosalt
}
TREE="$W/tree"
if [ ! -f "$W/tree.done" ]; then
  rm -rf "$TREE" "$W/small"
  mkdir -p "$TREE"
  tar -C "$TREE" -xf "$ROOT/.cache/rootfs-cubieboard.tar"
  cp -a "$TREE" "$W/small"
  for d in $(seq 0 7); do
    mkdir -p "$TREE/usr/share/bench/lib$d" "$TREE/usr/share/bench/doc$d" "$TREE/usr/share/bench/assets$d"
    prng "lib$d" $((40 << 20)) | tr '\000-\377' '[\000*192][\001-\100]' | (cd "$TREE/usr/share/bench/lib$d" && split -a 4 -d -b 196613 - f)
    prng "doc$d" $((30 << 20)) | base64 -w 76 | (cd "$TREE/usr/share/bench/doc$d" && split -a 4 -d -b 21417 - f)
    prng "assets$d" $((30 << 20)) | (cd "$TREE/usr/share/bench/assets$d" && split -a 4 -d -b 2100000 - f)
  done
  touch "$W/tree.done"
fi
echo "tree: $(du -sh "$TREE" | cut -f1) in $(find "$TREE" | wc -l) entries; small tree: $(du -sh "$W/small" | cut -f1)"

# genimage inputs: the same boot files boardsmith takes from the tree.
IN="$W/genimage-input"
rm -rf "$IN"; mkdir -p "$IN/extlinux" "$IN/dtbs"
KVER=$(ls "$TREE/lib/modules" | head -n1)
cp "$TREE/boot/vmlinuz-$KVER" "$IN/zImage"
cp "$TREE/boot/initrd.img-$KVER" "$IN/initrd.img"
cp "$TREE/usr/lib/linux-image-$KVER/sun4i-a10-cubieboard.dtb" "$IN/dtbs/"
cp "$TREE/usr/lib/u-boot/Cubieboard/u-boot-sunxi-with-spl.bin" "$IN/"
printf 'default boardsmith\nlabel boardsmith\n    linux /zImage\n    initrd /initrd.img\n    fdt /dtbs/sun4i-a10-cubieboard.dtb\n    append console=ttyS0,115200 root=/dev/mmcblk0p2 rootwait\n' >"$IN/extlinux/extlinux.conf"
cat >"$W/genimage.cfg" <<EOF
image boot.vfat {
  vfat { files = { "zImage", "initrd.img", "dtbs", "extlinux" } }
  size = 128M
}
image rootfs.ext4 {
  ext4 { use-mke2fs = true  label = "rootfs" }
  size = 1919M
}
image cubieboard.img {
  hdimage { partition-table-type = "mbr" }
  partition spl { in-partition-table = false  image = "u-boot-sunxi-with-spl.bin"  offset = 8K }
  partition boot { partition-type = 0xC  bootable = true  image = "boot.vfat"  offset = 1M }
  partition rootfs { partition-type = 0x83  image = "rootfs.ext4" }
}
EOF
GEN="genimage --rootpath $TREE --tmppath $W/gtmp --inputpath $IN --outputpath $W/gout --config $W/genimage.cfg"
SUMS="bmaptool create -o $W/gout/cubieboard.img.bmap $W/gout/cubieboard.img && sha256sum $W/gout/cubieboard.img >$W/gout/cubieboard.img.sha256 && md5sum $W/gout/cubieboard.img >$W/gout/cubieboard.img.md5"
BUILD="$BS build cubieboard --rootfs $TREE -o $W/bout --size 2GiB --progress none"

BASE=()
[ -z "${BASELINE:-}" ] || BASE=(-n "baseline build ($BASELINE)" "$BASELINE build cubieboard --rootfs $TREE -o $W/bout --size 2GiB --progress none")
# Interleaved rounds: each round runs every command once (hyperfine --runs 1), so load that drifts over
# minutes (other builds on a shared machine) weighs on all commands alike; round 0 is a discarded warm-up.
N="${RUNS:-5}"
echo "## load before: $(cut -d' ' -f1-3 /proc/loadavg)"
for i in $(seq 0 "$N"); do
  hyperfine --style none --runs 1 --export-json "$W/build.r$i.json" \
    --prepare "rm -rf $W/gtmp $W/gout $W/bout" \
    -n "boardsmith build (image + bmap + sha256 + md5)" "$BUILD" \
    "${BASE[@]}" \
    -n "genimage (image only)" "$GEN" \
    -n "genimage + bmaptool create + sha256sum + md5sum" "$GEN && $SUMS" >/dev/null
done
echo "## load after: $(cut -d' ' -f1-3 /proc/loadavg)"
python3 - "$W" "$N" <<'PY'
import json, statistics, sys
w, n = sys.argv[1], int(sys.argv[2])
merged = {}
for i in range(1, n + 1):
    for r in json.load(open(f"{w}/build.r{i}.json"))["results"]:
        merged.setdefault(r["command"], []).extend(r["times"])
ours = statistics.median(next(iter(merged.values())))
print(f"\n{n} interleaved rounds (after a warm-up round), medians:\n")
print("| command | median | min – max | ÷ boardsmith |\n| --- | --- | --- | --- |")
for cmd, t in merged.items():
    m = statistics.median(t)
    print(f"| {cmd} | {m:.2f} s | {min(t):.2f} – {max(t):.2f} s | {m / ours:.2f} |")
PY

echo
echo "peak memory (max RSS) of boardsmith build:"
for t in small tree; do
  rm -rf "$W/bout"
  /usr/bin/time -f "%M" -o "$W/rss" $BS build cubieboard --rootfs "$W/$t" -o "$W/bout" --size 2GiB --progress none 2>/dev/null
  echo "  $t ($(du -sh "$W/$t" | cut -f1)): $(cat "$W/rss") KiB"
done
rm -rf "$W/gtmp" "$W/gout" "$W/bout"
