#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0-or-later
# Condenses `cmake --build` output on stdin into a few progress lines on
# stdout: one line each time the build gets at least STEP percent further
# (default 10), with the time since the start and the file being compiled,
# then a last line saying what was built, that nothing needed it, or that it
# failed (it does not see cmake's exit status: it looks for make's and
# Ninja's failure lines; the caller checks the status too). Keep the
# full output elsewhere (tee) for when the build fails. Reads both generators'
# counters: Makefiles' "[ 45%] Building CXX object ..." and Ninja's
# "[12/40] Building CXX object ...".
#
# Usage: cmake --build DIR 2>&1 | tee LOG | scripts/build-progress.sh [STEP]
set -uo pipefail
step=${1:-10}
start=$SECONDS
shown=-1 compiled=0 linked=() failed=0

elapsed() { printf '%d:%02d' $(( (SECONDS - start) / 60 )) $(( (SECONDS - start) % 60 )); }

re_make='^\[ *([0-9]+)%\] (.*)$'
re_ninja='^\[([0-9]+)/([0-9]+)\] (.*)$'
while IFS= read -r line; do
  # make: "gmake[2]: *** [...] Error 1"; Ninja: "FAILED: ..."
  if [[ $line == *"*** "*"Error "* || $line == "FAILED: "* ]]; then failed=1; continue; fi
  if [[ $line =~ $re_make ]]; then
    pct=${BASH_REMATCH[1]} what=${BASH_REMATCH[2]}
  elif [[ $line =~ $re_ninja ]]; then
    pct=$(( BASH_REMATCH[1] * 100 / BASH_REMATCH[2] )) what=${BASH_REMATCH[3]}
  else
    continue
  fi
  case $what in
    "Building "*)
      compiled=$((compiled + 1))
      # ".../CMakeFiles/relink_daemon.dir/src/daemon/daemon.cc.o" -> "src/daemon/daemon.cc"
      file=${what##* }
      file=${file#*.dir/}
      file=${file%.o}
      ;;
    "Linking CXX executable "*)
      linked+=("${what##* }")
      file="linking ${what##* }"
      ;;
    *) continue ;;
  esac
  # Several targets (make relinkd relinkctl) count from the start each.
  (( shown - pct >= step )) && shown=-1
  if (( shown < 0 || pct - shown >= step )); then
    printf '  [%3d%%] %5s  %s\n' "$pct" "$(elapsed)" "$file"
    shown=$pct
  fi
done

if (( failed )); then
  printf '  build failed after %s (%d compiled before it)\n' "$(elapsed)" "$compiled"
elif (( compiled == 0 && ${#linked[@]} == 0 )); then
  echo "  up to date: nothing to compile"
else
  printf '  [100%%] %5s  done: %d compiled%s\n' "$(elapsed)" "$compiled" \
    "${linked[*]:+, linked ${linked[*]}}"
fi
