"""A process in the file-system sandbox its systemd unit gives it (`ProtectSystem=strict`,
`ProtectHome=read-only`), without systemd: in a mount namespace of its own every mount is read-only but
/proc, /sys, /dev and the directories named writable (what the unit's StateDirectory=, CacheDirectory=,
ReadWritePaths= and PrivateTmp= leave writable; a test adds its run directory). Tests otherwise run every
process outside any sandbox, so a write the unit forbids went unseen until a real node: a venv's bytecode,
ansible's ~/.ansible/tmp. The namespace is private: the machine's own mounts are not touched.
"""

from __future__ import annotations

from collections.abc import Sequence

# $@: the writable directories, "--", the command. Each writable directory is bound onto itself first, so that
# it is a mount of its own that the loop leaves writable; every other mount is remounted read-only.
SCRIPT = r"""set -e
mount --make-rprivate /
keep=" /proc /sys /dev "
while [ "$1" != "--" ]; do mount --bind "$1" "$1"; keep="$keep$1 "; shift; done
shift
awk '{print $5}' /proc/self/mountinfo | sort -u | while read -r m; do
  case "$keep" in *" $m "*) continue ;; esac
  case "$m" in /proc/*|/sys/*|/dev/*) continue ;; esac
  mount -o remount,bind,ro "$m" 2>/dev/null || echo "sandbox: $m stays as it is" >&2
done
exec "$@"
"""


def argv(writable: Sequence[str], command: Sequence[str]) -> list[str]:
    """`command` run in the sandbox, `writable` (existing directories) left writable."""
    return ["unshare", "--mount", "sh", "-c", SCRIPT, "sandbox", *writable, "--", *command]
