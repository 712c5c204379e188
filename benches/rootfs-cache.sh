#!/usr/bin/env bash
# benches/rootfs-cache.sh [--xfce] [--jobs N]: the base cache, in one run on this machine (the lead runs
# it on a quiet machine; never from the tests).
#   1. RUNS interleaved hyperfine rounds (--runs 1 each, so load that drifts over the minutes slows both
#      alike), each: `boardsmith rootfs cubieboard` with an empty base cache (cold: mmdebstrap builds
#      the base and the board layer), then `boardsmith rootfs mk802` right after (same packages, medium
#      and derived modules: a layer hit, no mmdebstrap, the board configuration only). Every round checks
#      from the JSON reports that the first built its base and layer and the second hit the layer.
#   2. `boardsmith build --all --jobs N` with an empty base cache: the bases and board layers mmdebstrap
#      built (one per distinct key) against the number of boards; then the same again, all from the cache.
# --xfce adds the xfce and droidmote features to every build (a stand-in DroidMote binary, a random
# DroidMote password); its rounds take an hour each on 2 cores, so RUNS defaults to 1 there.
# The package cache is shared and kept (BOARDSMITH_BENCH_APT, default $XDG_CACHE_HOME/boardsmith/apt), so
# downloads do not count (run once before measuring to fill it); the base caches are fresh. The security
# archive is left out (as in the tests). Prints Markdown tables with the load average before and after;
# BENCHMARKS.md keeps the figures. Environment: RUNS (rounds, default 3, --xfce 1).
set -euo pipefail
cd "$(dirname "$0")/.."
XFCE=0
JOBS=2
while [ $# -gt 0 ]; do
  case "$1" in
    --xfce) XFCE=1 ;;
    --jobs) JOBS=$2; shift ;;
    *) echo "usage: $0 [--xfce] [--jobs N]" >&2; exit 2 ;;
  esac
  shift
done
[ "$(id -u)" = 0 ] || { echo "$0: run as root (mmdebstrap's unshare mode with real owners)" >&2; exit 1; }
for t in hyperfine python3 mmdebstrap openssl; do
  command -v "$t" >/dev/null || { echo "$0: needs $t (scripts/install-deps.sh installs it)" >&2; exit 1; }
done
RUNS=${RUNS:-$([ "$XFCE" = 1 ] && echo 1 || echo 3)}
BIN=$PWD/target/release/boardsmith
cargo build --release --quiet
APT=${BOARDSMITH_BENCH_APT:-${XDG_CACHE_HOME:-$HOME/.cache}/boardsmith/apt}
mkdir -p "$APT"
W=$(mktemp -d /var/tmp/bs-cache-bench.XXXXXX)
trap 'rm -rf "$W"' EXIT
O=$W/results
mkdir -p "$O"
export SOURCE_DATE_EPOCH=1700000000
BOARDSMITH_PASSWORD_HASH=$(openssl passwd -6 -salt benchsalt bench-password)
export BOARDSMITH_PASSWORD_HASH
unset BOARDSMITH_CACHE
# Arguments as one shell-quoted string: hyperfine runs each command through the shell.
q() { printf '%q ' "$@"; }
COMMON=$(q --security-mirror '' --progress none)
FEATURES=""
if [ "$XFCE" = 1 ]; then
  printf '#!/bin/sh\n# stand-in for the DroidMote server (benchmark)\nexec sleep infinity\n' >"$W/droidmote"
  FEATURES=$(q --feature xfce --feature droidmote --droidmote-binary "$W/droidmote" \
    --droidmote-sha256 "$(sha256sum "$W/droidmote" | cut -d' ' -f1)" --droidmote-password random)
fi
# A fresh cache directory whose package cache is the shared one.
fresh_cache() {
  rm -rf "${W:?}/$1"
  mkdir -p "$W/$1"
  ln -s "$APT" "$W/$1/apt"
  echo "$W/$1"
}
load() { cut -d' ' -f1-3 /proc/loadavg; }
# field FILE KEY...: a value of a JSON report.
field() { python3 -c 'import functools,json,sys; print(functools.reduce(lambda v, k: v[k], sys.argv[2:], json.load(open(sys.argv[1]))))' "$@"; }

# 1. Cold cubieboard, then mk802 from its base; interleaved rounds, round 0 a warm-up (discarded unless
# it is the only one).
C1=$(fresh_cache single)
LOAD1="$(load)"
for i in $(seq 0 "$RUNS"); do
  hyperfine --style none --runs 1 --export-json "$O/pair.r$i.json" \
    --prepare "rm -rf $(q "$C1/bases") $(q "$C1/layers") $(q "$W/cubieboard.tar") $(q "$W/cubieboard.tar").*" \
    --prepare "rm -f $(q "$W/mk802.tar") $(q "$W/mk802.tar").*" \
    -n "rootfs cubieboard, empty base cache (mmdebstrap)" \
    "nice -n 10 $(q "$BIN") rootfs cubieboard -o $(q "$W/cubieboard.tar") --cache $(q "$C1") $COMMON $FEATURES --json >$(q "$O/cubieboard.r$i.json")" \
    -n "rootfs mk802 right after (same base and layer: a hit)" \
    "nice -n 10 $(q "$BIN") rootfs mk802 -o $(q "$W/mk802.tar") --cache $(q "$C1") $COMMON $FEATURES --json >$(q "$O/mk802.r$i.json")" \
    >/dev/null
  cold=$(field "$O/cubieboard.r$i.json" base cache)/$(field "$O/cubieboard.r$i.json" base layer cache)
  hit=$(field "$O/mk802.r$i.json" base layer cache)
  if [ "$cold" != built/built ] || [ "$hit" != hit ]; then
    echo "$0: round $i: cubieboard's base/layer $cold, mk802's layer $hit (expected built/built, hit)" >&2
    exit 1
  fi
done
LOAD1="$LOAD1 → $(load)"
rm -rf "$W/cubieboard.tar"* "$W/mk802.tar"* "$C1"

# 2. build --all, empty base cache, then again.
C2=$(fresh_cache all)
LOAD2="$(load)"
# (-i: a board that fails makes build --all exit 1; the summary says which.)
hyperfine --style none --runs 1 -i --export-json "$O/all.json" \
  --prepare "rm -rf $(q "$W/out-cold")" --prepare "rm -rf $(q "$W/out-warm")" \
  -n "build --all --jobs $JOBS, empty base cache" \
  "nice -n 10 $(q "$BIN") build --all --jobs $JOBS -o $(q "$W/out-cold") --cache $(q "$C2") $COMMON $FEATURES --json >/dev/null" \
  -n "build --all --jobs $JOBS again (every base cached)" \
  "nice -n 10 $(q "$BIN") build --all --jobs $JOBS -o $(q "$W/out-warm") --cache $(q "$C2") $COMMON $FEATURES --json >/dev/null" \
  >/dev/null
LOAD2="$LOAD2 → $(load)"

summary() {
  python3 - "$1" <<'PY'
import json, sys
s = json.load(open(sys.argv[1]))
per = ", ".join(f"{b['board']} {(b['base_key'] or '-')[:12]} {b['base_cache'] or b['error']} / layer {(b['layer_key'] or '-')[:12]} {b['layer_cache'] or '-'}" for b in s["boards"])
print(f"{s['bases_built']} bases and {s['layers_built']} board layers built by mmdebstrap for {len(s['boards'])} boards ({s['bases']} and {s['layers']} distinct), {s['failed']} failed: {per}")
PY
}

echo
echo "rootfs-cache benchmark $(date -u '+%Y-%m-%d %H:%M UTC'), $(nproc) cores, features: ${FEATURES:+xfce droidmote}${FEATURES:-none}, $(mmdebstrap --version), $RUNS rounds"
python3 - "$O" "$RUNS" "$LOAD1" "$LOAD2" <<'PY'
import json, statistics, sys
o, n, load1, load2 = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
merged = {}
for i in range(1 if n >= 1 else 0, n + 1):
    for r in json.load(open(f"{o}/pair.r{i}.json"))["results"]:
        merged.setdefault(r["command"], []).extend(r["times"])
print(f"\n| step (load {load1}) | median | min – max |\n| --- | --- | --- |")
for k, v in merged.items():
    print(f"| {k} | {statistics.median(v):.0f} s | {min(v):.0f} – {max(v):.0f} s |")
print(f"\n| step (load {load2}) | wall |\n| --- | --- |")
for r in json.load(open(f"{o}/all.json"))["results"]:
    print(f"| {r['command']} | {r['times'][0]:.0f} s |")
PY
echo
[ -f "$W/out-cold/build-summary.json" ] && echo "build --all, empty cache: $(summary "$W/out-cold/build-summary.json")"
[ -f "$W/out-warm/build-summary.json" ] && echo "build --all again: $(summary "$W/out-warm/build-summary.json")"
"$BIN" cache list --cache "$C2"
