"""The one-cluster rule: every mon of a Ceph storage must report the same fsid.

ZStack 1.2 never checked this (zstackio/zstack#269): a mistyped monUrl of another cluster was accepted
and images landed in the wrong cluster. The coordinator asks the cephagent on each mon for its fsid and
passes the answers here before it stores anything.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping

from cephagent.errors import FsidMismatch
from cephagent.monurl import FIELD


def check_same_fsid(results: Mapping[str, str], expected: str | None = None) -> str:
    """Return the fsid all mons agree on, or raise FsidMismatch naming the odd ones out.

    `results` maps a mon (its redacted monUrl or address, in the order the user gave them) to the fsid
    its agent reported. `expected` is the storage's recorded fsid when mons are added to an existing
    storage. Without it the majority wins; on a tie, the first mon listed defines the cluster.
    """
    if not results:
        raise ValueError("check_same_fsid needs at least one mon")
    if expected is None:
        counts = Counter(results.values())
        top = max(counts.values())
        expected = next(f for f in results.values() if counts[f] == top)
    odd = {mon: fsid for mon, fsid in results.items() if fsid != expected}
    if not odd:
        return expected
    agree = [mon for mon, fsid in results.items() if fsid == expected]
    named = "; ".join(f"mon {mon} reports fsid {fsid}" for mon, fsid in odd.items())
    basis = f"{', '.join(agree)} report{'s' if len(agree) == 1 else ''} {expected}" if agree else \
        f"the storage's cluster is {expected}"
    raise FsidMismatch(field=FIELD, detail=f"{named}, but {basis}", odd=list(odd), expected=expected)
