#!/usr/bin/env bash
# network.sh [--small] [WORKLOAD_DIR] [OUT_DIR]
#
# Benchmarks `boardsmith write URL` on the shared workload's .xz (../shared/bench/make-workload.sh; 4 GiB
# image, or 256 MiB with --small) served from 127.0.0.1 by the tests' HTTP server (examples/netserver.rs,
# Range/If-Range/ETag) rate-limited to RATE bytes/s per connection (default 50 MB/s), in one hyperfine
# run, onto a file:
#
#   boardsmith, no drops         : boardsmith write URL FILE --bmap sdcard.bmap --no-verify
#   boardsmith, three drops      : the same against a server that cuts every download at 1/4, 2/4 and
#                                  3/4 of the .xz (boardsmith resumes mid-write)
#   wget -c loop + bmaptool copy : the seed's way: `until wget -c ...; do :; done` to a file (wget resumes
#                                  with Range by itself), then bmaptool copy --bmap (same three drops)
#
# Target: three drops / no drops <= 1.1. Prints medians and ratios as Markdown.
# Environment: RUNS (rounds, default 3; --small: 1), RATE (bytes/s, default 50000000),
# MAKE_WORKLOAD (path of make-workload.sh).
set -euo pipefail
export LC_ALL=C
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
SMALL=0
if [ "${1:-}" = --small ]; then SMALL=1; shift; fi
if [ "$SMALL" = 1 ]; then
  W="${1:-$ROOT/.cache/workload-small}"
  O="${2:-$ROOT/.cache/bench-network-small}"
else
  W="${1:-$ROOT/.cache/workload}"
  O="${2:-$ROOT/.cache/bench-network}"
fi
MW="${MAKE_WORKLOAD:-}"
for c in "$ROOT/../shared/bench/make-workload.sh" "$ROOT/../../shared/bench/make-workload.sh" \
  /work/shared/bench/make-workload.sh; do
  [ -n "$MW" ] || { [ -x "$c" ] && MW="$c"; } || true
done
if [ ! -f "$W/sdcard.img.xz" ]; then
  [ -n "$MW" ] || { echo "no workload in $W and make-workload.sh not found (set MAKE_WORKLOAD)" >&2; exit 1; }
  if [ "$SMALL" = 1 ]; then "$MW" --small "$W"; else "$MW" "$W"; fi
fi
for t in hyperfine wget bmaptool python3; do
  command -v "$t" >/dev/null || { echo "$t is missing (apt-get install $t)" >&2; exit 1; }
done
W="$(cd "$W" && pwd)"
mkdir -p "$O"
O="$(cd "$O" && pwd)"
RUNS="${RUNS:-$([ "$SMALL" = 1 ] && echo 1 || echo 3)}"
RATE="${RATE:-50000000}"
cargo build --release --quiet --manifest-path "$ROOT/Cargo.toml" --bin boardsmith --example netserver
BS="$ROOT/target/release/boardsmith"
NS="$ROOT/target/release/examples/netserver"
T="$O/target.img"
DL="$O/download.img.xz"

# The served directory holds only the image: the bmap comes from the command line (a local file with
# range checksums), as the wget + bmaptool way has it.
S="$O/served"
mkdir -p "$S"
ln -f "$W/sdcard.img.xz" "$S/sdcard.img.xz" 2>/dev/null || cp "$W/sdcard.img.xz" "$S/sdcard.img.xz"
LEN=$(stat -c %s "$S/sdcard.img.xz")
DROPS="$((LEN / 4)),$((LEN / 2)),$((3 * LEN / 4))"

PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; }
trap cleanup EXIT
serve() { # serve FIFO ARGS...: starts a server, prints its base URL
  local f="$O/$1.url"; shift
  rm -f "$f"
  "$NS" "$S" --rate "$RATE" "$@" >"$f" &
  PIDS+=($!)
  for _ in $(seq 100); do [ -s "$f" ] && break; sleep 0.05; done
  head -n1 "$f"
}
CLEAN=$(serve clean)
DROPPY=$(serve drops --drops "$DROPS")
echo "## $(basename "$W"): .xz of $LEN bytes at $RATE B/s; drops at $DROPS" >&2
echo "## load before: $(cut -d' ' -f1-3 /proc/loadavg)" >&2

BSW="$BS write --bmap $W/sdcard.bmap --no-verify --progress none"
for i in $(seq 0 "$RUNS"); do
  hyperfine --style none --prepare "rm -f $T $DL" --runs 1 --export-json "$O/net.r$i.json" \
    -n "boardsmith write URL, no drops" "$BSW $CLEAN/sdcard.img.xz $T" \
    -n "boardsmith write URL, three drops" "$BSW $DROPPY/sdcard.img.xz $T" \
    -n "wget -c loop + bmaptool copy, three drops" \
    "until wget -q -c --tries=20 -O $DL $DROPPY/sdcard.img.xz; do :; done; bmaptool -q copy --bmap $W/sdcard.bmap $DL $T" \
    >/dev/null
done
echo "## load after: $(cut -d' ' -f1-3 /proc/loadavg)" >&2
rm -f "$T" "$DL"

python3 - "$O" "$RUNS" <<'PY'
import json, statistics, sys
o, n = sys.argv[1], int(sys.argv[2])
merged = {}
# Round 0 is a warm-up and is discarded (unless it is the only one).
for i in range(1 if n >= 1 else 0, n + 1):
    for r in json.load(open(f"{o}/net.r{i}.json"))["results"]:
        merged.setdefault(r["command"], []).extend(r["times"])
med = {k: statistics.median(v) for k, v in merged.items()}
base = med["boardsmith write URL, no drops"]
print("\n| network (.xz over http) | median | min – max | ÷ no drops |\n| --- | --- | --- | --- |")
for k, v in merged.items():
    print(f"| {k} | {med[k]:.2f} s | {min(v):.2f} – {max(v):.2f} s | {med[k] / base:.2f} |")
r = med["boardsmith write URL, three drops"] / base
print(f"\n- three drops / no drops = {r:.2f} (target ≤ 1.1): {'met' if r <= 1.1 else 'NOT met'}")
w = med["wget -c loop + bmaptool copy, three drops"] / med["boardsmith write URL, three drops"]
print(f"- wget -c + bmaptool copy / boardsmith (three drops) = {w:.2f}")
PY
