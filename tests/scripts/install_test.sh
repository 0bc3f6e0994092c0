#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0-or-later
# `cmake --install BUILD_DIR --prefix /usr` into a throwaway DESTDIR puts
# every file where docs/operations.md ("Installed files") says, as a Debian
# package lays them out: nothing under etc/, nothing unexpected, man pages
# that render without warnings, completion scripts the shells accept, and a
# systemd unit that runs the installed relinkd.
#
# Usage: install_test.sh BUILD_DIR SOURCE_DIR
set -uo pipefail
build=$1
src=$2
fail=0

tmp=$(mktemp -d) || exit 1
trap 'rm -rf "$tmp"' EXIT
root=$tmp/root

bad() { echo "FAILED: $*"; fail=1; }

if ! DESTDIR=$root cmake --install "$build" --prefix /usr >"$tmp/install.log" 2>&1; then
  echo "FAILED: cmake --install $build --prefix /usr (are relinkd, relinkctl and the man pages built?)"
  sed 's/^/  /' "$tmp/install.log"
  exit 1
fi

cache() {  # VARIABLE: its value in the build's CMakeCache.txt
  sed -n "s/^$1:[A-Z]*=//p" "$build/CMakeCache.txt"
}

# A directory as the build resolves it: the cache's override, else the
# package's pkg-config variable, else FALLBACK under the prefix. Printed
# relative to DESTDIR.
dir_for() {  # CACHE-VARIABLE PKG-CONFIG-MODULE PKG-CONFIG-VARIABLE FALLBACK
  local d
  d=$(cache "$1")
  [ -n "$d" ] || d=$(pkg-config --variable="$3" "$2" 2>/dev/null)
  [ -n "$d" ] || d=$4
  case $d in
    /*) echo "${d#/}" ;;
    *) echo "usr/$d" ;;
  esac
}

unit_dir=$(dir_for RELINK_SYSTEMD_UNIT_DIR systemd systemdsystemunitdir lib/systemd/system)
bash_dir=$(dir_for RELINK_BASH_COMPLETION_DIR bash-completion completionsdir share/bash-completion/completions)
doc=usr/share/doc/relink

expected=(
  usr/sbin/relinkd
  usr/bin/relinkctl
  "$unit_dir/relinkd.service"
  "$bash_dir/relinkctl"
  usr/share/zsh/vendor-completions/_relinkctl
  "$doc/README.md"
  "$doc/COPYRIGHT"
  "$doc/examples/relinkd.toml"
)
for f in "$src"/docs/*.md; do expected+=("$doc/docs/${f##*/}"); done
man_pages=(usr/share/man/man8/relinkd.8 usr/share/man/man1/relinkctl.1 usr/share/man/man5/relinkd.toml.5)
if [ "$(cache RELINK_MAN)" = OFF ]; then
  echo "note: RELINK_MAN=OFF, no man pages expected"
else
  expected+=("${man_pages[@]}")
fi

for f in "${expected[@]}"; do
  if [ -f "$root/$f" ]; then echo "ok: /$f"; else bad "missing /$f"; fi
done
for f in usr/sbin/relinkd usr/bin/relinkctl; do
  [ -x "$root/$f" ] || bad "/$f is not executable"
done

# Nothing into /etc: the configuration is the administrator's (or a
# package's conffile).
if [ -e "$root/etc" ]; then
  bad "files under /etc:"; (cd "$root" && find etc -type f | sed 's/^/  \//')
fi

# Nothing the docs do not list.
while IFS= read -r f; do
  known=0
  for e in "${expected[@]}"; do [ "$f" = "$e" ] && known=1 && break; done
  [ $known = 1 ] || bad "unexpected file /$f (add it to docs/operations.md and this test)"
done < <(cd "$root" && find . -type f -o -type l | sed 's|^\./||' | sort)

# The unit runs the relinkd installed with it, whatever prefix the build
# was configured with.
unit=$root/$unit_dir/relinkd.service
if [ -f "$unit" ]; then
  grep -qx 'ExecStart=/usr/sbin/relinkd --config /etc/relinkd/relinkd.toml' "$unit" ||
    bad "relinkd.service does not run /usr/sbin/relinkd: $(grep '^ExecStart=' "$unit")"
  ! grep -qE '@[A-Za-z_][A-Za-z0-9_]*@' "$unit" || bad "relinkd.service has an unsubstituted @VARIABLE@: $(grep -E '@[A-Za-z_][A-Za-z0-9_]*@' "$unit")"
fi

# Man pages render without a warning from groff or man.
if [ "$(cache RELINK_MAN)" != OFF ]; then
  for m in "${man_pages[@]}"; do
    [ -f "$root/$m" ] || continue
    if ! MANWIDTH=80 man -l --warnings=w "$root/$m" >"$tmp/man.out" 2>"$tmp/man.err" || [ -s "$tmp/man.err" ]; then
      bad "man -l /$m:"; sed 's/^/  /' "$tmp/man.err"
    elif ! grep -q '^NAME' "$tmp/man.out"; then
      bad "man -l /$m: no NAME section"
    else
      echo "ok: man -l /$m renders without warnings"
    fi
  done
fi

# The completion scripts parse.
if [ -f "$root/$bash_dir/relinkctl" ]; then
  if bash -n "$root/$bash_dir/relinkctl" 2>"$tmp/sh.err"; then echo "ok: bash -n"
  else bad "bash -n /$bash_dir/relinkctl:"; sed 's/^/  /' "$tmp/sh.err"; fi
fi
zsh_file=$root/usr/share/zsh/vendor-completions/_relinkctl
if ! command -v zsh >/dev/null; then
  echo "note: no zsh here, zsh completion not checked"
elif [ -f "$zsh_file" ]; then
  if zsh -n "$zsh_file" 2>"$tmp/sh.err"; then echo "ok: zsh -n"
  else bad "zsh -n /usr/share/zsh/vendor-completions/_relinkctl:"; sed 's/^/  /' "$tmp/sh.err"; fi
fi

if [ $fail != 0 ]; then
  echo "installed tree:"; (cd "$root" && find . -type f | sort | sed 's|^\./|  /|')
  exit 1
fi
echo "install layout ok"
