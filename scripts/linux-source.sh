#!/usr/bin/env bash
# Fetches Debian's kernel source package once and extracts it into a cache (default .cache/linux-source
# in the repository, git-ignored), then prints the tree's path. Reused across runs; safe to run
# concurrently (flock). Used by the real-kernel tests, and by hand:
#   boardsmith kconfig cubieboard --kernel-src "$(scripts/linux-source.sh)"
# Environment: BOARDSMITH_LINUX_SOURCE_PKG (default linux-source-6.1), BOARDSMITH_LINUX_CACHE.
set -euo pipefail
cd "$(dirname "$0")/.."
pkg=${BOARDSMITH_LINUX_SOURCE_PKG:-linux-source-6.1}
cache=${BOARDSMITH_LINUX_CACHE:-$PWD/.cache/linux-source}
mkdir -p "$cache"
cache=$(cd "$cache" && pwd)
exec 9>"$cache/.lock"
flock 9
tree="$cache/$pkg"
stamp="$cache/$pkg.extracted"
if [ ! -f "$stamp" ] || [ ! -d "$tree" ]; then
  rm -rf "$tree" "$tree.partial" "$stamp"
  rm -f "$cache/${pkg}"_*.deb
  (cd "$cache" && apt-get download "$pkg" >&2)
  deb=$(ls "$cache/${pkg}"_*.deb | head -n1)
  mkdir -p "$tree.partial"
  echo "extracting $(basename "$deb") into $tree" >&2
  dpkg-deb --fsys-tarfile "$deb" | tar -xO "./usr/src/$pkg.tar.xz" \
    | tar -xJ -C "$tree.partial" --strip-components=1
  mv "$tree.partial" "$tree"
  basename "$deb" > "$stamp"
  rm -f "$deb"
fi
echo "$tree"
