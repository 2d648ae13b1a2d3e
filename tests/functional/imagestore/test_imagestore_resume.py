"""Interrupted downloads resume where they stopped (HTTP Range), whether the source went away or the
agent was killed; the web server's access log shows no byte fetched twice beyond what was in flight.
A source that changed meanwhile (If-Range) is fetched again from the start."""

from __future__ import annotations

import asyncio
import shutil

import pytest

from imagestore.wire import AddRequest
from testbed.imagestore import ImageStoreProcess, ns_session

pytestmark = pytest.mark.real
MiB = 1 << 20



async def wait_for_progress(client, image_id: str, at_least: int) -> int:
    for _ in range(600):
        info = await client.image(image_id)
        if info.progress and info.progress.done >= at_least:
            return info.progress.done
        assert info.state == "downloading", info
        await asyncio.sleep(0.05)
    raise AssertionError(f"{image_id}: no progress")


def assert_fetched_once(hits, size: int, tcp_buffer: int) -> None:
    """Each resumed request starts where the one before had got to, less what was in flight when it broke:
    in the socket buffers (both ends, at most `tcp_buffer` each) and the agent's read buffer (1 MiB)."""
    in_flight = MiB + 2 * tcp_buffer
    first, *rest = hits
    assert (first.status, first.range) == (200, None)
    assert rest and all(h.status == 206 and h.range and h.if_range for h in rest), hits
    starts = [int(h.range.removeprefix("bytes=").rstrip("-")) for h in rest]
    sent_before = [sum(h.sent for h in hits[:i + 1]) for i in range(len(rest))]
    for start, sent in zip(starts, sent_before, strict=True):
        assert sent - in_flight <= start <= sent, (start, sent)  # resumed where it had got to
    assert size <= sum(h.sent for h in hits) <= size + in_flight * len(rest)


async def test_a_broken_connection_is_resumed_with_range(lab, store, client):
    url = lab.web.url("slow/big.raw")
    await client.add("gone", AddRequest(url=url, sha256=lab.sha256("big.raw")))
    await wait_for_progress(client, "gone", 6 * MiB)
    lab.web.cut()
    info = await client.wait("gone", interval=0.2, timeout=60)
    assert info.sha256 == lab.sha256("big.raw")
    assert_fetched_once(lab.web.hits("/slow/big.raw", at_least=2), (lab.files / "big.raw").stat().st_size,
                        lab.tcp_buffer)
    assert "download interrupted; resuming" in store.log()


async def test_a_killed_agent_resumes_its_download_when_it_starts_again(lab, store):
    async with ns_session(lab.store_ns.name) as session:
        client = store.client(session)
        await client.add("killed", AddRequest(url=lab.web.url("slow/other.raw"), md5=lab.md5("other.raw")))
        await wait_for_progress(client, "killed", 8 * MiB)
        store.kill()
        store.start()  # nobody asks again: the agent picks the download up by itself
        info = await client.wait("killed", interval=0.2, timeout=60)
    assert info.md5 == lab.md5("other.raw")
    assert_fetched_once(lab.web.hits("/slow/other.raw", at_least=2), (lab.files / "other.raw").stat().st_size,
                        lab.tcp_buffer)
    assert "resuming download" in store.log()


async def test_a_source_that_changed_meanwhile_is_fetched_again_from_the_start(lab, store):
    path = lab.files / "changing.raw"
    shutil.copy(lab.files / "big.raw", path)
    async with ns_session(lab.store_ns.name) as session:
        client = store.client(session)
        await client.add("changed", AddRequest(url=lab.web.url("slow/changing.raw")))
        await wait_for_progress(client, "changed", 4 * MiB)
        store.kill()
        shutil.copy(lab.files / "other.raw", path.with_suffix(".new"))
        path.with_suffix(".new").rename(path)
        store.start()
        info = await client.wait("changed", interval=0.2, timeout=60)
    assert info.sha256 == lab.sha256("other.raw")
    first, second = lab.web.hits("/slow/changing.raw", at_least=2)
    assert (second.status, second.sent) == (200, path.stat().st_size) and second.range and second.if_range


def test_a_second_agent_on_the_same_root_exits_with_one_line_and_leaves_the_first_alone(lab, store):
    """Two image stores on one host given one root (another port): the second would resume the first one's
    downloads into the same files; it ends as it starts, saying why, and the first keeps serving."""
    second = ImageStoreProcess(lab.store_ns, store.root, store.address, port=store.port + 1, token=store.token)
    with pytest.raises(RuntimeError, match="imagestore exited 1"):
        second.start()
    assert store.proc is not None
    assert second.log().strip().splitlines()[-1] == (f"imagestore: root {store.root}: another imagestore process "
                                                     f"(pid {store.proc.pid}) uses it (it holds {store.root}/lock)")
    assert store.get("/health")[0] == 200
