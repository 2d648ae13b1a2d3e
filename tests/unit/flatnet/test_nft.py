"""The one nft table writer: the atomic script, and writing only when the kernel's fingerprint differs.

`nft` itself is faked here by a table store that answers `nft -t list table` and `nft -f` as the real one
does for our tables (Felix's IptablesStub); the real `nft` runs in tests/functional/flatnet.
"""

from __future__ import annotations

import re
import subprocess
from collections.abc import Callable, Sequence

import pytest

from agentkit.proc import ProcessError
from flatnet import nft
from flatnet.errors import FlatnetError, NftError
from flatnet.nft import NftTable, fingerprint, script, sync_isolating

BODY = ["\tchain c {", "\t\ttype filter hook forward priority filter; policy accept;", "\t}"]


class FakeNft:
    """Tables by (netns, family, name) -> the script that made them; every argv is recorded."""

    def __init__(self) -> None:
        self.tables: dict[tuple[str | None, str, str], str] = {}
        self.packets: dict[tuple[str | None, str, str], dict[str, int]] = {}  # named counters, reset by a write
        self.calls: list[list[str]] = []
        self.fail = False
        self.refuse: Callable[[str], bool] = lambda script: False  # what the kernel would refuse

    async def __call__(self, argv: Sequence[str], *, input: str | None = None,
                       rcs: Sequence[int] = (0,)) -> subprocess.CompletedProcess[str]:
        self.calls.append(list(argv))
        netns = argv[3] if argv[:3] == ["ip", "netns", "exec"] else None
        args = list(argv[argv.index("nft") + 1:])
        if self.fail:
            raise ProcessError(argv, 1, "", "Error: syntax error")
        check = args[:1] == ["-c"]
        args = args[1:] if check else args
        if args[:2] == ["-f", "-"]:
            assert input is not None
            if self.refuse(input):
                raise ProcessError(argv, 1, "", "Error: Could not process rule: File exists")
            if check:
                return subprocess.CompletedProcess(argv, 0, "", "")
            family, name = re.match(r"table (\w+) (\w+) \{\}", input).groups()  # type: ignore[union-attr]
            if input.count("\n") > 2:
                self.tables[(netns, family, name)] = input
                named = re.findall(r"^\tcounter (\w+) \{\}$", input, re.M)
                self.packets[(netns, family, name)] = dict.fromkeys(named, 0)
            else:
                self.tables.pop((netns, family, name), None)
            return subprocess.CompletedProcess(argv, 0, "", "")
        if args[:3] == ["list", "counters", "table"]:
            counts = self.packets.get((netns, args[3], args[4]))
            listing = "".join(f"\tcounter {n} {{\n\t\tpackets {p} bytes 0\n\t}}\n" for n, p in (counts or {}).items())
            return subprocess.CompletedProcess(argv, 0 if counts is not None else 1, listing, "")
        assert args[:3] == ["-t", "list", "table"]
        found = self.tables.get((netns, args[3], args[4]))
        rc = 0 if found is not None else 1
        assert rc in rcs
        return subprocess.CompletedProcess(argv, rc, found.split("\n", 2)[2] if found else "", "")


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> FakeNft:
    f = FakeNft()
    monkeypatch.setattr(nft, "arun", f)
    return f


def test_script_replaces_or_deletes_in_one_transaction():
    assert script("bridge", "t", None) == "table bridge t {}\ndelete table bridge t\n"
    lines = script("inet", "t", BODY).splitlines()
    assert lines[:3] == ["table inet t {}", "delete table inet t", "table inet t {"]
    assert lines[3] == f'\tcomment "hoststack {fingerprint(BODY)}"'
    assert lines[4:] == [*BODY, "}"]
    assert fingerprint(BODY) != fingerprint([*BODY, "\tchain d {", "\t}"]) and len(fingerprint(BODY)) == 16


async def test_a_current_table_is_not_written_again_not_even_by_a_new_process(fake):
    assert await NftTable("bridge", "t").sync(BODY) is True
    writes = [c for c in fake.calls if "-f" in c]
    assert await NftTable("bridge", "t").sync(BODY) is False  # a restarted agent: same body, nothing written
    assert [c for c in fake.calls if "-f" in c] == writes
    assert await NftTable("bridge", "t").sync([*BODY, "\tchain d {", "\t}"]) is True


async def test_a_table_not_built_by_us_is_replaced_and_none_deletes_ours(fake):
    fake.tables[(None, "bridge", "t")] = "table bridge t {}\ndelete table bridge t\ntable bridge t {\n}\n"
    table = NftTable("bridge", "t")
    assert await table.current() == ""
    assert await table.sync(BODY) is True and await table.current() == fingerprint(BODY)
    assert await table.sync(None) is True and await table.current() is None
    assert await table.sync(None) is False


async def test_a_namespace_runs_nft_inside_it_and_failures_are_nft_errors(fake):
    await NftTable("ip", "t", "ns1").sync(BODY)
    assert fake.calls[-1] == ["ip", "netns", "exec", "ns1", "nft", "-f", "-"]
    assert (None, "ip", "t") not in fake.tables and ("ns1", "ip", "t") in fake.tables
    fake.fail = True
    with pytest.raises(NftError, match="nft table ip t in ns1: .*syntax error") as caught:
        await NftTable("ip", "t", "ns1").sync([])
    assert isinstance(caught.value, FlatnetError) and caught.value.code == "nft_unavailable"


def _items(items: Sequence[str]) -> list[str] | None:
    return [f"\t# {i}" for i in items]


async def test_items_nft_refuses_are_found_by_halving_and_the_rest_is_written(fake):
    fake.refuse = lambda script: "bad" in script or len(re.findall(r"# (\w+)", script)) != len(
        set(re.findall(r"# (\w+)", script)))  # a bad item, or one item twice ("File exists")
    table = NftTable("bridge", "t")
    items = [f"i{n}" for n in range(16)]
    assert await sync_isolating(table, items, _items) == []
    refused = await sync_isolating(table, [*items[:5], "bad1", *items[5:], "i3", "bad2"], _items)
    assert refused == ["bad1", "i3", "bad2"]
    written = fake.tables[(None, "bridge", "t")]
    assert re.findall(r"# (\w+)", written) == items
    checks = [c for c in fake.calls if "-c" in c]
    assert 0 < len(checks) <= 30  # halving, not one check per item pair
    fake.fail = True
    with pytest.raises(NftError):  # nft itself broken: nothing to isolate, the error stands
        await sync_isolating(table, items, _items)


async def test_without_verify_an_unchanged_table_costs_no_process_and_a_verified_pass_repairs(fake):
    """The hot path (a live migration's switch) trusts what this object wrote or read; the periodic resync
    verifies, so a table changed behind its back comes back then."""
    table = NftTable("ip", "t", "ns1")
    assert not table.holds(BODY) and not table.holds(None)  # nothing known yet
    assert await table.sync(BODY, verify=False) is True  # read, then written
    assert table.holds(BODY) and not table.holds(None)
    calls = len(fake.calls)
    assert await table.sync(BODY, verify=False) is False
    assert len(fake.calls) == calls
    del fake.tables[("ns1", "ip", "t")]  # an operator deletes it
    assert await table.sync(BODY, verify=False) is False  # not seen without reading ...
    assert await table.sync(BODY) is True and ("ns1", "ip", "t") in fake.tables  # ... repaired when verified
    assert await table.sync(None, verify=False) is True and await table.current() is None
    fake.fail = True
    with pytest.raises(NftError):
        await table.sync(BODY, verify=False)
    fake.fail = False
    calls = len(fake.calls)
    assert await table.sync(None, verify=False) is False  # after a failed write the kernel is read again
    assert fake.calls[calls][-4:] == ["list", "table", "ip", "t"]


async def test_named_counters_keep_counting_across_rewrites_of_the_table(fake):
    """A write replaces the table and so resets its counters: what they had counted is carried."""
    body = ["\tcounter dropped {}", "\tcounter other {}", *BODY]
    table = NftTable("bridge", "t", "ns1", counters=("dropped",))
    assert await table.counters() == {"dropped": 0}  # no table yet
    await table.sync(body)
    fake.packets[("ns1", "bridge", "t")] = {"dropped": 5, "other": 9}
    assert await table.sync(body) is False and await table.counters() == {"dropped": 5}  # unchanged: kept
    await table.sync([*body, "\tchain d {", "\t}"])
    fake.packets[("ns1", "bridge", "t")]["dropped"] += 2
    assert await table.counters() == {"dropped": 7}
    fake.refuse = lambda script: "chain e" in script
    with pytest.raises(NftError):  # a refused write changes nothing, so nothing is carried twice
        await table.sync([*body, "\tchain e {", "\t}"])
    assert await table.counters() == {"dropped": 7}
    calls = len(fake.calls)
    assert await NftTable("bridge", "t", "ns1").counters() == {} and len(fake.calls) == calls  # none asked for
