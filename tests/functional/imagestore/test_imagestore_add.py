"""Adding images to the real agent from a real web server: checksums, formats told by the data, media
types, file:// confinement, idempotent requests; every refusal leaves nothing on disk. Its /metrics as a
scraper reads it."""

from __future__ import annotations

import asyncio

import pytest

from imagestore.client import RemoteError
from imagestore.wire import AddRequest
from testbed import promtext
from testbed.imagestore import ns_session

pytestmark = pytest.mark.real
MiB = 1 << 20


def leftovers(store, image_id: str) -> list[str]:
    return [str(p.relative_to(store.root)) for p in store.root.rglob("*") if image_id in p.name]


async def add(client, image_id: str, **request) -> object:
    await client.add(image_id, AddRequest(**request))
    return await client.wait(image_id, interval=0.1, timeout=60)


async def md5_of(client, image_id: str) -> str | None:
    """The md5 of an image added without one: computed from the file once it is ready."""
    for _ in range(100):
        if (info := await client.image(image_id)).md5:
            return info.md5
        await asyncio.sleep(0.05)
    return None


async def test_qcow2_with_the_right_sha256_is_ready_with_its_figures(lab, store, client):
    info = await add(client, "q1", url=lab.web.url("small.qcow2"), sha256=lab.sha256("small.qcow2"))
    assert (info.format, info.media_type, info.virtual_size) == ("qcow2", "RootVolumeTemplate", 64 * MiB)
    assert (info.size, info.sha256) == ((lab.files / "small.qcow2").stat().st_size, lab.sha256("small.qcow2"))
    assert await md5_of(client, "q1") == lab.md5("small.qcow2")
    info = await client.image("q1")
    assert (store.root / "images/q1/data").stat().st_mode & 0o777 == 0o444
    assert await client.add("q1", AddRequest(url=lab.web.url("small.qcow2"), sha256=lab.sha256("small.qcow2"))) \
        == info  # the same request again: the image as it is, nothing fetched
    assert len(lab.web.hits("/small.qcow2", at_least=1)) == 1


async def test_raw_with_md5_is_detected_and_kept_thin(lab, store, client):
    info = await add(client, "r1", url=lab.web.url("small.raw"), md5=lab.md5("small.raw"),
                     media_type="DataVolumeTemplate")
    assert (info.format, info.media_type, info.size, info.virtual_size) == ("raw", "DataVolumeTemplate",
                                                                            64 * MiB, 64 * MiB)
    assert info.actual_size is not None and info.actual_size <= 8 * MiB  # 4 MiB of data; zeros are holes


async def test_iso_is_an_iso_medium(lab, client):
    info = await add(client, "iso1", url=lab.web.url("installer.iso"))
    assert (info.format, info.media_type) == ("iso", "ISO")


@pytest.mark.parametrize(("name", "request_", "code", "message"), [
    ("bad-sha", {"url": "small.qcow2", "sha256": "0" * 64}, "checksum_mismatch", "sha256 of the downloaded data"),
    ("bad-md5", {"url": "small.raw", "md5": "f" * 32}, "checksum_mismatch", "md5 of the downloaded data"),
    ("backing", {"url": "overlay.qcow2"}, "format_rejected", "backing file"),
    ("datafile", {"url": "datafile.qcow2"}, "format_rejected", "external data file"),
    ("vmdk", {"url": "disk.vmdk"}, "format_rejected", "the data is a vmdk image"),
    ("not-qcow2", {"url": "small.raw", "format": "qcow2"}, "format_rejected", "declared format qcow2"),
    ("raw-as-iso", {"url": "small.raw", "media_type": "ISO"}, "format_rejected", "media type ISO"),
    ("missing", {"url": "nothing.qcow2"}, "source_failed", "HTTP 404"),
])
async def test_refusals_leave_nothing(lab, store, client, name, request_, code, message):
    with pytest.raises(RemoteError, match=message) as e:
        await add(client, name, **{**request_, "url": lab.web.url(request_["url"])})
    assert e.value.code == code
    assert (await client.image(name)).state == "failed"
    assert leftovers(store, name) == []


async def test_a_wrong_format_stops_the_download_early(lab, store, client):
    with pytest.raises(RemoteError, match="declared format iso") as e:
        await add(client, "early", url=lab.web.url("slow/big.raw"), format="iso")
    assert e.value.code == "format_rejected"
    (hit,) = lab.web.hits("/slow/big.raw", at_least=1)
    assert hit.sent < 8 * MiB  # of 24: stopped once the head was in, not at the end


async def test_file_urls_only_below_the_allowed_root_without_symlinks(lab, store, client):
    info = await add(client, "f1", url=f"file://{lab.files}/allowed/sub/small.qcow2")
    assert info.sha256 == lab.sha256("small.qcow2")
    for path, why in [(lab.files / "small.qcow2", "outside the directories"),
                      (lab.files / "allowed/../small.qcow2", "without '..'"),
                      (lab.files / "allowed/link.raw", "symlinks are not followed"),
                      (lab.files / "allowed/up/small.raw", "symlinks are not followed"),
                      (lab.files / "allowed/sub", "not a regular file")]:
        with pytest.raises(RemoteError, match=why) as e:
            await client.add("f2", AddRequest(url=f"file://{path}"))
        assert (e.value.status, e.value.code, e.value.field) == (400, "url_refused", "url")
    assert leftovers(store, "f2") == []


async def test_another_request_for_an_existing_id_is_a_conflict(lab, client):
    await add(client, "c1", url=lab.web.url("small.raw"))
    with pytest.raises(RemoteError, match="different url") as e:
        await client.add("c1", AddRequest(url=lab.web.url("big.raw")))
    assert e.value.status == 409


async def test_delete_removes_the_image_and_its_bytes(lab, store, client):
    await add(client, "d1", url=lab.web.url("big.raw"))
    used = (await client.capacity()).used
    await client.delete("d1")
    with pytest.raises(RemoteError) as e:
        await client.image("d1")
    assert e.value.code == "image_not_found"
    assert leftovers(store, "d1") == [] and (await client.capacity()).used <= used - 24 * MiB


async def test_metrics_count_a_served_image_for_the_scrapers_token_alone(lab, store, client):
    """The scrapers' metrics_token reads /metrics, which counts the bytes of an image a host read, and opens
    no image route: a ticket's place refuses it and counts it as a malformed ticket."""
    info = await add(client, "m1", url=lab.web.url("installer.iso"))
    scraper = {"Authorization": f"Bearer {store.settings['metrics_token']}"}
    async with ns_session(lab.store_ns.name) as session:

        async def scrape() -> str:
            async with session.get(f"{store.url}/metrics", headers=scraper) as r:
                assert r.status == 200
                return await r.text()

        before = await scrape()
        async with session.get(f"{store.url}/v1/images/m1/data",
                               headers={"Authorization": f"Bearer {store.ticket('m1')}"}) as r:
            assert (r.status, len(await r.read())) == (200, info.size)
        for path in ("/v1/images/m1/data", "/v1/images/m1", "/v1/images"):
            async with session.get(f"{store.url}{path}", headers=scraper) as r:
                assert r.status == 401, path
        after = await scrape()
    served, refused = "hoststack_imagestore_served_bytes_total", "hoststack_imagestore_tickets_refused_total"
    assert promtext.value(after, served) - promtext.value(before, served) == info.size
    assert promtext.value(after, refused, op="read", reason="malformed") == \
        promtext.value(before, refused, op="read", reason="malformed") + 1
    assert promtext.value(after, "hoststack_imagestore_images", state="ready") >= 1
    assert promtext.value(after, "hoststack_imagestore_received_bytes_total", kind="download") >= info.size
