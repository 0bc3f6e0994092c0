#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0-or-later
# Builds the Debian package (debian/) from a copy of the working tree, so
# that the tree itself stays clean, and prints the path of the .deb.
#
#   scripts/build-deb.sh [OUT_DIR]
#
# OUT_DIR (default /var/cache/relink/deb) receives relink_*.deb and the
# build's log (build.log). The build itself always runs in
# /var/cache/relink/deb-build/relink-VERSION (RELINK_DEB_BUILD_ROOT), one
# build at a time: a fixed path, so that ccache (when installed; CCACHE_DIR
# as scripts/test.sh sets it) hits across builds, since dpkg-buildflags
# maps that path into the compiler flags. Progress goes to stderr.
# Environment: DEB_BUILD_OPTIONS (default "nocheck noddebs parallel=2").
# Needs dpkg-dev, debhelper and the build dependencies in debian/control
# (scripts/install-deps.sh).
set -euo pipefail
src=$(cd "$(dirname "$0")/.." && pwd)
out=$(realpath -m "${1:-/var/cache/relink/deb}")
version=$(dpkg-parsechangelog -l "$src/debian/changelog" -S Version)
start=$(date +%s)

broot=${RELINK_DEB_BUILD_ROOT:-/var/cache/relink/deb-build}
mkdir -p "$out" "$broot"
exec 9>"$broot/.lock"
flock 9

tree=$broot/relink-$version
rm -rf "${broot:?}"/relink-* "${broot:?}"/relink_*
mkdir -p "$tree"
# The working tree as it is (committed or not), without build directories
# or anything git ignores; outside git (an unpacked archive), all but the
# build directories.
if git -C "$src" rev-parse --is-inside-work-tree >/dev/null 2>&1; then
  (cd "$src" && git ls-files -z --cached --others --exclude-standard |
    while IFS= read -r -d '' f; do [[ -e $f ]] && printf '%s\0' "$f"; done |
    tar --null -T - -cf -) | tar -C "$tree" -xf -
else
  tar -C "$src" --exclude='./build*' --exclude='./obj-*' -cf - . | tar -C "$tree" -xf -
fi

export DEB_BUILD_OPTIONS=${DEB_BUILD_OPTIONS:-nocheck noddebs parallel=2}
if command -v ccache >/dev/null; then
  export CCACHE_DIR=${CCACHE_DIR:-/var/cache/relink/ccache} CCACHE_BASEDIR=$tree CCACHE_NOHASHDIR=1
  export CCACHE_MAXSIZE=${CCACHE_MAXSIZE:-5G}
  mkdir -p "$CCACHE_DIR"
  export RELINK_DEB_CMAKE_ARGS=-DCMAKE_CXX_COMPILER_LAUNCHER=ccache
fi
echo "build-deb.sh: dpkg-buildpackage -b -us -uc in $tree (DEB_BUILD_OPTIONS=$DEB_BUILD_OPTIONS)" >&2
if ! (cd "$tree" && dpkg-buildpackage -b -us -uc) >"$out/build.log" 2>&1; then
  tail -n 40 "$out/build.log" >&2
  echo "build-deb.sh: dpkg-buildpackage failed (log: $out/build.log)" >&2
  exit 1
fi
arch=$(dpkg-architecture -qDEB_HOST_ARCH)
deb=relink_${version}_$arch.deb
rm -f "$out"/relink_*.deb
mv "$broot/$deb" "$out/$deb"
rm -rf "${broot:?}"/relink-* "${broot:?}"/relink_*
echo "build-deb.sh: built $out/$deb in $(( $(date +%s) - start )) s" >&2
echo "$out/$deb"
