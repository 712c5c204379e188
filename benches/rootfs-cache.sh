#!/usr/bin/env bash
# benches/rootfs-cache.sh [--xfce] [--jobs N]: the base cache, in one run on this machine.
#   1. `boardsmith rootfs cubieboard` with an empty base cache: mmdebstrap builds the base (cold);
#   2. `boardsmith rootfs mk802` right after: same packages and initramfs configuration, so a hit
#      (no mmdebstrap; the board configuration only);
#   3. `boardsmith build --all --jobs N` with an empty base cache: counts the bases mmdebstrap built
#      (one per distinct key) against the number of boards;
#   4. the same `build --all` again: every base from the cache.
# --xfce adds the xfce and droidmote features to every build (a stand-in DroidMote binary, a random
# DroidMote password). The package cache is shared and kept (BOARDSMITH_BENCH_APT, default
# $XDG_CACHE_HOME/boardsmith/apt), so downloads do not count; the base caches are fresh. The security
# archive is left out (as in the tests). Prints a Markdown table with the load average before and after
# each step; BENCHMARKS.md keeps the figures.
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
BIN=$PWD/target/release/boardsmith
cargo build --release --quiet
APT=${BOARDSMITH_BENCH_APT:-${XDG_CACHE_HOME:-$HOME/.cache}/boardsmith/apt}
mkdir -p "$APT"
W=$(mktemp -d /var/tmp/bs-cache-bench.XXXXXX)
trap 'rm -rf "$W"' EXIT
export SOURCE_DATE_EPOCH=1700000000
BOARDSMITH_PASSWORD_HASH=$(openssl passwd -6 -salt benchsalt bench-password)
export BOARDSMITH_PASSWORD_HASH
unset BOARDSMITH_CACHE
COMMON=(--security-mirror '' --progress none)
FEATURES=()
if [ "$XFCE" = 1 ]; then
  printf '#!/bin/sh\n# stand-in for the DroidMote server (benchmark)\nexec sleep infinity\n' >"$W/droidmote"
  FEATURES=(--feature xfce --feature droidmote --droidmote-binary "$W/droidmote"
    --droidmote-sha256 "$(sha256sum "$W/droidmote" | cut -d' ' -f1)" --droidmote-password random)
fi
# A fresh cache directory whose package cache is the shared one.
fresh_cache() {
  mkdir -p "$W/$1"
  ln -s "$APT" "$W/$1/apt"
  echo "$W/$1"
}
load() { cut -d' ' -f1-3 /proc/loadavg; }
ROWS=()
# step NAME COMMAND...: runs it under /usr/bin/time, records wall and CPU time and the load.
step() {
  local name=$1 before after
  shift
  before=$(load)
  /usr/bin/time -f '%e %U %S' -o "$W/time" nice -n 10 "$@" >"$W/out.json" 2>"$W/err" \
    || { cat "$W/err" >&2; echo "$0: $name failed" >&2; exit 1; }
  after=$(load)
  read -r wall user sys <"$W/time"
  ROWS+=("| $name | $(printf '%.0f s' "$wall") | $(printf '%.0f s' "$(echo "$user + $sys" | bc)") | $before → $after |")
}

# summary BUILD-SUMMARY.JSON: bases built, boards, failures, and each board's base.
summary() {
  python3 - "$1" <<'PY'
import json, sys
s = json.load(open(sys.argv[1]))
per = ", ".join(f"{b['board']} {(b['base_key'] or '-')[:12]} {b['base_cache'] or b['error']}" for b in s["boards"])
print(f"{s['bases_built']} bases built by mmdebstrap for {len(s['boards'])} boards ({s['bases']} distinct), {s['failed']} failed: {per}")
PY
}

C1=$(fresh_cache single)
step "rootfs cubieboard, empty base cache (mmdebstrap)" \
  "$BIN" rootfs cubieboard -o "$W/cubieboard.tar" --cache "$C1" "${COMMON[@]}" "${FEATURES[@]}" --json
cold=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["base"]["cache"])' "$W/out.json")
step "rootfs mk802 right after (same base)" \
  "$BIN" rootfs mk802 -o "$W/mk802.tar" --cache "$C1" "${COMMON[@]}" "${FEATURES[@]}" --json
hit=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["base"]["cache"])' "$W/out.json")
# Disk space: each step's outputs go once measured.
rm -rf "$W/cubieboard.tar" "$W/mk802.tar" "$C1"

C2=$(fresh_cache all)
step "build --all --jobs $JOBS, empty base cache" \
  "$BIN" build --all --jobs "$JOBS" -o "$W/out-cold" --cache "$C2" "${COMMON[@]}" "${FEATURES[@]}" --json
bases=$(summary "$W/out-cold/build-summary.json")
rm -rf "$W/out-cold"
step "build --all --jobs $JOBS again (every base cached)" \
  "$BIN" build --all --jobs "$JOBS" -o "$W/out-warm" --cache "$C2" "${COMMON[@]}" "${FEATURES[@]}" --json
again=$(summary "$W/out-warm/build-summary.json")
rm -rf "$W/out-warm"

echo
echo "rootfs-cache benchmark $(date -u '+%Y-%m-%d %H:%M UTC'), $(nproc) cores, features: ${FEATURES[*]:+xfce droidmote}${FEATURES[*]:-none}, $(mmdebstrap --version)"
echo
echo "| step | wall | CPU (user+sys) | load average (1, 5, 15 min) before → after |"
echo "| --- | --- | --- | --- |"
printf '%s\n' "${ROWS[@]}"
echo
echo "cubieboard: base $cold; mk802: base $hit"
echo "build --all, empty cache: $bases"
echo "build --all again: $again"
"$BIN" cache list --cache "$C2"
