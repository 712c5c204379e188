#!/usr/bin/env bash
# writer.sh [WORKLOAD_DIR] [OUT_DIR]
#
# Benchmarks `boardsmith write` on the shared 4 GiB workload (../shared/bench/make-workload.sh: sparse
# SD image with ~1.4 GiB mapped, its bmap, .xz/.zst/.gz/.7z) side by side with the peers the writer issue
# names, all in one run with hyperfine, onto a file on the same filesystem. Prints medians, ratios
# and each target's verdict as Markdown, and boardsmith's peak RSS per format (/usr/bin/time -v).
#
#   raw+bmap -> file : boardsmith (no verify; with verify) | dd bs=4M conv=sparse,fsync |
#                      cp --sparse=always + sync FILE | qemu-img convert -O raw + sync FILE | bmaptool copy
#   the disk's floor : dd writing as many bytes as the bmap maps (O_DIRECT), and the same followed by
#                      dd reading them back (O_DIRECT): what any write + read-back costs on this disk
#   .xz/.zst/.gz     : boardsmith (no verify) | DECOMPRESSOR -dc >/dev/null | DECOMPRESSOR -dc | dd ... |
#                      bmaptool copy
#   .7z              : boardsmith (no verify) | 7z x -so >/dev/null | 7z x -so | dd ...
#
# Every boardsmith run finds sdcard.bmap beside the image (as bmaptool does) and checks each mapped
# range's SHA-256, like bmaptool copy; "no verify" skips only the read-back.
# Environment: RUNS (rounds; default 9 for raw, 3 for compressed), ONLY (groups to run, default
# "raw xz zst gz 7z"), MAKE_WORKLOAD (path of make-workload.sh), BASELINE (another boardsmith binary, e.g. an
# older commit's release build: each group then also runs it, in the same rounds, as "baseline ...").
set -euo pipefail
export LC_ALL=C
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
W="${1:-$ROOT/.cache/workload}"
O="${2:-$ROOT/.cache/bench-writer}"
MW="${MAKE_WORKLOAD:-}"
for c in "$ROOT/../shared/bench/make-workload.sh" "$ROOT/../../shared/bench/make-workload.sh"; do
  [ -n "$MW" ] || { [ -x "$c" ] && MW="$c"; } || true
done
if [ ! -f "$W/sdcard.img.7z" ]; then
  [ -n "$MW" ] || { echo "no workload in $W and make-workload.sh not found (set MAKE_WORKLOAD)" >&2; exit 1; }
  "$MW" "$W"
fi
W="$(cd "$W" && pwd)"
mkdir -p "$O"
O="$(cd "$O" && pwd)"
cargo build --release --quiet --manifest-path "$ROOT/Cargo.toml"
BS="$ROOT/target/release/boardsmith"
T="$O/target.img"
DD="dd of=$T bs=4M iflag=fullblock conv=sparse,fsync status=none"
RAW_RUNS="${RUNS:-9}"
Z_RUNS="${RUNS:-3}"
# Dense data as long as the image's mapped part (the compressed files are incompressible enough).
MAPPED=$(python3 - "$W/sdcard.img" <<'PY'
import os, sys
fd = os.open(sys.argv[1], os.O_RDONLY); off = n = 0
while True:
    try: d = os.lseek(fd, off, os.SEEK_DATA)
    except OSError: break
    h = os.lseek(fd, d, os.SEEK_HOLE); n += h - d; off = h
print(n)
PY
)
DENSE="$O/dense.src"
[ "$(stat -c %s "$DENSE" 2>/dev/null)" = "$MAPPED" ] ||
  { cat "$W"/sdcard.img.{zst,7z,xz,gz} || true; } | head -c "$MAPPED" >"$DENSE"
DDW="dd if=$DENSE of=$T bs=4M oflag=direct conv=fsync status=none"

# rounds NAME N -n NAME CMD ...: N rounds, each running every command once (hyperfine --runs 1), so a
# disk whose speed drifts over minutes (this VM's does) slows all commands alike; one round first
# is discarded as warm-up. The rounds' JSON files are merged into NAME.json.
rounds() {
  local name="$1" n="$2"; shift 2
  for i in $(seq 0 "$n"); do
    hyperfine --style none --prepare "rm -f $T" --runs 1 --export-json "$O/$name.r$i.json" "$@" >/dev/null
  done
  python3 - "$O" "$name" "$n" <<'PY'
import json, sys
o, name, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
merged = {}
for i in range(1, n + 1):
    for r in json.load(open(f"{o}/{name}.r{i}.json"))["results"]:
        merged.setdefault(r["command"], {"command": r["command"], "times": []})["times"] += r["times"]
json.dump({"results": list(merged.values())}, open(f"{o}/{name}.json", "w"))
PY
}

ONLY="${ONLY:-raw xz zst gz 7z}"
want() { [[ " $ONLY " == *" $1 "* ]]; }

echo "## load before: $(cut -d' ' -f1-3 /proc/loadavg)" >&2
# base EXT: the baseline binary's no-verify write of sdcard.img.EXT, when BASELINE is set.
base() { [ -z "${BASELINE:-}" ] || printf '%s\0' -n "baseline write $1 (no verify)" "$BASELINE write $W/sdcard.img$1 $T --no-verify --progress none"; }
mapfile -d '' BRAW < <(base "")
want raw && rounds raw "$RAW_RUNS" \
  -n "boardsmith write (no verify)" "$BS write $W/sdcard.img $T --no-verify --progress none" \
  "${BRAW[@]}" \
  -n "boardsmith write + verify" "$BS write $W/sdcard.img $T --progress none" \
  -n "dd bs=4M conv=sparse,fsync" "dd if=$W/sdcard.img of=$T bs=4M conv=sparse,fsync status=none" \
  -n "cp --sparse=always + sync" "cp --sparse=always $W/sdcard.img $T && sync $T" \
  -n "qemu-img convert -O raw + sync" "qemu-img convert -O raw $W/sdcard.img $T && sync $T" \
  -n "bmaptool copy" "bmaptool -q copy --bmap $W/sdcard.bmap $W/sdcard.img $T" \
  -n "floor: dd write (mapped bytes)" "$DDW" \
  -n "floor: dd write + dd read back" "$DDW && dd if=$T of=/dev/null bs=4M iflag=direct status=none"

for f in xz:"xz -T2 -dc" zst:"zstd -dc" gz:"gzip -dc"; do
  ext="${f%%:*}"; dec="${f#*:}"
  want "$ext" || continue
  verify=()
  [ "$ext" = xz ] && verify=(-n "boardsmith write .xz + verify" "$BS write $W/sdcard.img.xz $T --progress none")
  mapfile -d '' BZ < <(base ".$ext")
  rounds "$ext" "$Z_RUNS" \
    -n "boardsmith write .$ext (no verify)" "$BS write $W/sdcard.img.$ext $T --no-verify --progress none" \
    "${BZ[@]}" \
    "${verify[@]}" \
    -n "$dec >/dev/null" "$dec $W/sdcard.img.$ext >/dev/null" \
    -n "$dec | dd" "$dec $W/sdcard.img.$ext | $DD" \
    -n "bmaptool copy .$ext" "bmaptool -q copy --bmap $W/sdcard.bmap $W/sdcard.img.$ext $T"
done
mapfile -d '' B7 < <(base .7z)
want 7z && rounds 7z "$Z_RUNS" \
  -n "boardsmith write .7z (no verify)" "$BS write $W/sdcard.img.7z $T --no-verify --progress none" \
  "${B7[@]}" \
  -n "7z x -so >/dev/null" "7z x -so $W/sdcard.img.7z >/dev/null" \
  -n "7z x -so | dd" "7z x -so $W/sdcard.img.7z | $DD"
echo "## load after: $(cut -d' ' -f1-3 /proc/loadavg)" >&2

: >"$O/rss.txt"
for ext in "" .xz .zst .gz .7z; do
  rm -f "$T"
  /usr/bin/time -v "$BS" write "$W/sdcard.img$ext" "$T" --progress none 2>"$O/time.txt" >/dev/null
  echo "${ext:-raw} $(awk -F': ' '/Maximum resident/ {print $2}' "$O/time.txt")" >>"$O/rss.txt"
done
rm -f "$T"

python3 - "$O" "$ONLY" <<'PY'
import json, statistics, sys
o, only = sys.argv[1], sys.argv[2].split()
def load(name):
    return {r["command"]: r for r in json.load(open(f"{o}/{name}.json"))["results"]}
def med(r): return statistics.median(r["times"])
def table(name, ours, targets):
    if name not in only:
        return
    rs = load(name)
    base = med(rs[ours])
    print(f"\n| {name} | median | min – max | ÷ boardsmith |\n| --- | --- | --- | --- |")
    for cmd, r in rs.items():
        m = med(r)
        print(f"| {cmd} | {m:.2f} s | {min(r['times']):.2f} – {max(r['times']):.2f} s | {m / base:.2f} |")
    for label, ok in targets(rs, base):
        print(f"\n- {label}: {'met' if ok else 'NOT met'}", end="")
    print()
def raw_targets(rs, base):
    fastest = min(med(rs[k]) for k in ("dd bs=4M conv=sparse,fsync", "cp --sparse=always + sync", "qemu-img convert -O raw + sync"))
    b = med(rs["bmaptool copy"])
    v = med(rs["boardsmith write + verify"])
    fw, fv = med(rs["floor: dd write (mapped bytes)"]), med(rs["floor: dd write + dd read back"])
    print(f"\n- the disk's own floor: dd write + read back ÷ dd write = {fv / fw:.2f}", end="")
    return [(f"raw+bmap: boardsmith / fastest peer = {base / fastest:.2f} (target ≤ 1.15)", base <= 1.15 * fastest),
            (f"raw+bmap: bmaptool / boardsmith = {b / base:.2f} (target ≥ 1.6)", b >= 1.6 * base),
            (f"write + verify / write = {v / base:.2f} (target ≤ 2.2)", v <= 2.2 * base)]
def comp_targets(dec, floor_ratio, bmap_ratio):
    def t(rs, base):
        floor = med(rs[f"{dec} >/dev/null"])
        out = [(f"boardsmith / `{dec} >/dev/null` = {base / floor:.2f} (target ≤ {floor_ratio})", base <= floor_ratio * floor)]
        bm = [k for k in rs if k.startswith("bmaptool")]
        if bm and bmap_ratio:
            b = med(rs[bm[0]])
            out.append((f"bmaptool / boardsmith = {b / base:.2f} (target ≥ {bmap_ratio})", b >= bmap_ratio * base))
        return out
    return t
table("raw", "boardsmith write (no verify)", raw_targets)
table("xz", "boardsmith write .xz (no verify)", comp_targets("xz -T2 -dc", 1.1, 1.7))
table("zst", "boardsmith write .zst (no verify)", comp_targets("zstd -dc", 1.3, None))
table("gz", "boardsmith write .gz (no verify)", comp_targets("gzip -dc", 99, None))
table("7z", "boardsmith write .7z (no verify)", comp_targets("7z x -so", 1.5, None))
print("\nPeak RSS of `boardsmith write` (with verify), KiB:")
for line in open(f"{o}/rss.txt"):
    print(f"- {line.strip()}")
PY
