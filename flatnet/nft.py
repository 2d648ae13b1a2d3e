"""The one way flatnet writes nftables: a whole table of ours, replaced in one atomic `nft -f`.

Renderers (`antispoof`, `bridge_rules`, `eip.rules`) return a table's body as lines; this module only
applies them (Felix keeps rule generation apart from programming it). The table's comment carries a
fingerprint of the body it was built from. `sync` reads that comment (`nft -t` lists without set
elements, so this stays cheap at 1,000 EIPs) and runs `nft -f` only when the fingerprint differs:
re-applying the same state, also from a restarted agent, changes nothing, and the kernel objects (sets,
their element order, rule handles) stay exactly as they were. Other tables are never touched. A caller on a
hot path may skip that read (`verify=False`): the fingerprint this object last wrote or read is trusted
then, as Felix trusts its cache between periodic refreshes, so a pass that changes nothing runs no process.
"""

from __future__ import annotations

import hashlib
import logging
import re
from collections import Counter
from collections.abc import Callable, Sequence
from typing import TypeVar

from agentkit.proc import ProcessError, arun
from flatnet.errors import NftError

log = logging.getLogger(__name__)
_COMMENT = re.compile(r'^\s*comment "hoststack ([0-9a-f]{16})"$', re.MULTILINE)
_COUNTER = re.compile(r"counter (\S+) \{\s*packets (\d+)")
_UNREAD = "?"  # never a fingerprint: what the kernel holds must be read
T = TypeVar("T")


def fingerprint(body: Sequence[str]) -> str:
    return hashlib.sha256("\n".join(body).encode()).hexdigest()[:16]


def script(family: str, name: str, body: Sequence[str] | None) -> str:
    """An `nft -f` script that replaces (or, for None, deletes) the table in one transaction."""
    lines = [f"table {family} {name} {{}}", f"delete table {family} {name}"]
    if body is not None:
        lines += [f"table {family} {name} {{", f'\tcomment "hoststack {fingerprint(body)}"', *body, "}"]
    return "\n".join(lines) + "\n"


class NftTable:
    """The table `family name` in `netns` (None: the namespace this process runs in); `counters` names the
    named counters of its bodies that `counters()` reads."""

    def __init__(self, family: str, name: str, netns: str | None = None, counters: Sequence[str] = ()):
        self.family = family
        self.name = name
        self.netns = netns
        self._known: str | None = _UNREAD  # the fingerprint this object last wrote or read (None: no table)
        self._counters = tuple(counters)
        self._carried: Counter[str] = Counter()  # what they had counted in the tables this object replaced

    async def _nft(self, *args: str, input: str | None = None, rcs: Sequence[int] = (0,)) -> tuple[int, str]:
        prefix = ["ip", "netns", "exec", self.netns] if self.netns else []
        try:
            out = await arun([*prefix, "nft", *args], input=input, rcs=rcs)
        except ProcessError as e:
            raise NftError(table=f"{self.family} {self.name}", netns=self.netns or "-", reason=str(e)) from e
        return out.returncode, str(out.stdout)

    async def current(self) -> str | None:
        """The fingerprint of the table now in the kernel: None when absent, "" when not built by us."""
        rc, listing = await self._nft("-t", "list", "table", self.family, self.name, rcs=(0, 1))
        if rc != 0:
            return None
        found = _COMMENT.search(listing)
        return found.group(1) if found else ""

    async def counters(self) -> dict[str, int]:
        """Packets counted by each of `counters`: the kernel's count plus those of the tables this object
        replaced (a write resets them), so a count only grows while the process lives."""
        kernel = await self._kernel_counts()
        return {n: self._carried[n] + kernel.get(n, 0) for n in self._counters}

    async def _kernel_counts(self) -> dict[str, int]:
        if not self._counters:
            return {}
        rc, listing = await self._nft("list", "counters", "table", self.family, self.name, rcs=(0, 1))
        return {n: int(p) for n, p in _COUNTER.findall(listing)} if rc == 0 else {}

    def holds(self, body: Sequence[str] | None) -> bool:
        """Whether the kernel's table is `body` as far as this object's last write or read knows (no process)."""
        return self._known == (fingerprint(body) if body is not None else None)

    async def check(self, body: Sequence[str] | None) -> None:
        """Raise NftError if the kernel would refuse the table `body` (`nft -c`: nothing is changed)."""
        await self._nft("-c", "-f", "-", input=script(self.family, self.name, body))

    async def sync(self, body: Sequence[str] | None, *, verify: bool = True) -> bool:
        """Make the table equal to `body` (None: no table); True when the kernel had to change. Without
        `verify` the fingerprint known from this object's last write or read stands for the kernel's."""
        want = fingerprint(body) if body is not None else None
        have = await self.current() if verify or self._known == _UNREAD else self._known
        self._known = have
        if have == want:
            return False
        self._known = _UNREAD  # a failed write may have changed the table or not
        counted = await self._kernel_counts() if have is not None else {}
        await self._nft("-f", "-", input=script(self.family, self.name, body))  # atomic: all or nothing
        self._carried.update(counted)
        self._known = want
        log.info("nft table replaced", extra={"fields": {
            "netns": self.netns, "table": f"{self.family} {self.name}", "fingerprint": want,
            "lines": len(body or [])}})
        return True


async def sync_isolating(table: NftTable, items: Sequence[T], render: Callable[[Sequence[T]], list[str] | None],
                         *, verify: bool = True) -> list[T]:
    """Write the table `render(items)`; if nft refuses it, write the largest set of items it takes and return
    the others. The culprits are found by halving, with `nft -c` (nothing changes meanwhile), as Felix's
    SplitBatchAndRetry does: one bad item costs about 2·log2(n) checks. An item refused only together with
    an earlier one (a duplicate) is the one left out. Raises NftError when nft refuses even the table
    without any item: then the fault is not in the data. `verify` as for `NftTable.sync`."""
    try:
        await table.sync(render(items), verify=verify)
        return []
    except NftError:
        if not items:
            raise
    await table.check(render([]))
    good: list[T] = []
    refused: list[T] = []

    async def add(part: Sequence[T]) -> None:
        try:
            await table.check(render([*good, *part]))
        except NftError:
            if len(part) == 1:
                refused.append(part[0])
                return
            await add(part[:len(part) // 2])
            await add(part[len(part) // 2:])
            return
        good.extend(part)

    await add(items)
    await table.sync(render(good))
    return refused
