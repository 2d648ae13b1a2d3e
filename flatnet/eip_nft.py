"""One nftables table of ours in one network namespace, replaced whole in one atomic `nft -f`.

The table's comment carries a fingerprint of the text it was built from. `sync` reads that comment
(`nft -t` lists without set elements, so this stays cheap at 1,000 EIPs) and runs `nft` only when
the fingerprint differs: re-applying the same state, also from a restarted agent, changes nothing,
and the kernel objects (sets, their element order, rule handles) stay exactly as they were.
"""

from __future__ import annotations

import hashlib
import logging
import re

from agentkit.proc import arun

log = logging.getLogger(__name__)
_COMMENT = re.compile(r'^\s*comment "hoststack ([0-9a-f]{16})"$', re.MULTILINE)


def fingerprint(body: list[str]) -> str:
    return hashlib.sha256("\n".join(body).encode()).hexdigest()[:16]


def script(family: str, name: str, body: list[str] | None) -> str:
    """An `nft -f` script that replaces (or, for None, deletes) the table in one transaction."""
    lines = [f"table {family} {name} {{}}", f"delete table {family} {name}"]
    if body is not None:
        lines += [f"table {family} {name} {{", f'\tcomment "hoststack {fingerprint(body)}"', *body, "}"]
    return "\n".join(lines) + "\n"


class NftTable:
    """A table `family name` in `netns` (None: the namespace this process runs in)."""

    def __init__(self, family: str, name: str, netns: str | None = None):
        self.family = family
        self.name = name
        self.netns = netns

    def _argv(self, *args: str) -> list[str]:
        prefix = ["ip", "netns", "exec", self.netns] if self.netns else []
        return [*prefix, "nft", *args]

    async def current(self) -> str | None:
        """The fingerprint of the table now in the kernel; None when absent or not built by us."""
        out = await arun(self._argv("-t", "list", "table", self.family, self.name), rcs=(0, 1))
        if out.returncode != 0:
            return None
        found = _COMMENT.search(out.stdout)
        return found.group(1) if found else ""

    async def sync(self, body: list[str] | None) -> bool:
        """Make the table equal to `body` (None: no table); True when the kernel had to change."""
        want = fingerprint(body) if body is not None else None
        if await self.current() == want:
            return False
        await arun(self._argv("-f", "-"), input=script(self.family, self.name, body))
        log.info("nft table replaced", extra={"fields": {
            "netns": self.netns, "table": f"{self.family} {self.name}", "fingerprint": want,
            "lines": len(body or [])}})
        return True
