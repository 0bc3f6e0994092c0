# shellcheck shell=bash
# SPDX-License-Identifier: GPL-2.0-or-later
# Boots a directory as a systemd container, as docs in /work/shared/design.md
# found to work here (systemd 252): systemd-nspawn --boot with no host D-Bus or
# machined (--register=no --keep-unit), a private network namespace (keeps
# CAP_NET_ADMIN and a /sys/class/net of its own), the unified cgroup
# hierarchy with bpf() allowed (so that DeviceAllow= is enforced), a volatile
# overlay over the directory, from a cgroup of its own (parallel runs would
# collide otherwise). Sourced by systemd_test.sh.
#
#   ct_boot DIR NAME   boot; sets CT_LEADER (the container's pid 1)
#   ct CMD...          run CMD in the container (all its namespaces)
#   ct_stop            stop it and remove its cgroups (idempotent)
#   CT_EXTRA_ARGS      more systemd-nspawn options (e.g. --bind-ro=...)

CT_NAME=
CT_NSPAWN=
CT_LEADER=
CT_LOG=
CT_EXTRA_ARGS=()

ct_boot() {
  local dir=$1 name=$2
  CT_NAME=$name
  CT_LOG=$dir.nspawn.log
  local cg
  for cg in /sys/fs/cgroup/unified /sys/fs/cgroup/systemd /sys/fs/cgroup; do
    # The unified hierarchy, and on a hybrid host the named v1 one too.
    if [[ $cg == /sys/fs/cgroup && -e /sys/fs/cgroup/unified ]]; then continue; fi
    [[ -e $cg/cgroup.procs ]] && mkdir -p "$cg/$name"
  done
  (
    for cg in /sys/fs/cgroup/unified /sys/fs/cgroup/systemd /sys/fs/cgroup; do
      [[ -d $cg/$name ]] && echo "$BASHPID" > "$cg/$name/cgroup.procs"
    done
    SYSTEMD_NSPAWN_UNIFIED_HIERARCHY=1 exec systemd-nspawn --boot --register=no --keep-unit \
      --console=passive -D "$dir" -M "$name" --private-network --system-call-filter=bpf \
      --volatile=overlay "${CT_EXTRA_ARGS[@]}"
  ) >"$CT_LOG" 2>&1 &
  CT_NSPAWN=$!
  local i state
  for ((i = 0; i < 300; i++)); do
    if ! kill -0 "$CT_NSPAWN" 2>/dev/null; then
      echo "systemd-nspawn exited:" >&2
      cat "$CT_LOG" >&2
      return 1
    fi
    if [[ -z $CT_LEADER ]]; then
      local child
      for child in $(pgrep -P "$CT_NSPAWN"); do
        [[ $(cat "/proc/$child/comm" 2>/dev/null) == systemd ]] && CT_LEADER=$child
      done
    fi
    if [[ -n $CT_LEADER ]]; then
      state=$(ct systemctl is-system-running 2>/dev/null) || true
      [[ $state == running || $state == degraded ]] && return 0
    fi
    sleep 0.1
  done
  echo "the container did not finish booting in 30 s (state: ${state:-unknown})" >&2
  [[ -n $CT_LEADER ]] && ct systemctl --failed --no-pager >&2
  return 1
}

ct() {
  nsenter -t "$CT_LEADER" -a -- env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin TERM=dumb SYSTEMD_COLORS=0 "$@"
}

ct_stop() {
  local i cg d
  if [[ -n $CT_NSPAWN ]] && kill -0 "$CT_NSPAWN" 2>/dev/null; then
    kill -TERM "$CT_NSPAWN" 2>/dev/null || true
    for ((i = 0; i < 100; i++)); do
      kill -0 "$CT_NSPAWN" 2>/dev/null || break
      sleep 0.1
    done
    kill -0 "$CT_NSPAWN" 2>/dev/null && kill -KILL "$CT_NSPAWN" 2>/dev/null
    wait "$CT_NSPAWN" 2>/dev/null || true
  fi
  CT_NSPAWN=
  CT_LEADER=
  if [[ -n $CT_NAME ]]; then
    for cg in /sys/fs/cgroup/unified /sys/fs/cgroup/systemd /sys/fs/cgroup; do
      [[ -d $cg/$CT_NAME ]] || continue
      # Children first; a cgroup goes once its last process has.
      for ((i = 0; i < 50; i++)); do
        while read -r d; do rmdir "$d" 2>/dev/null || true; done < <(find "$cg/$CT_NAME" -depth -type d 2>/dev/null)
        [[ -d $cg/$CT_NAME ]] || break
        sleep 0.1
      done
      [[ -d $cg/$CT_NAME ]] && echo "warning: could not remove $cg/$CT_NAME" >&2
    done
  fi
  CT_NAME=
}
