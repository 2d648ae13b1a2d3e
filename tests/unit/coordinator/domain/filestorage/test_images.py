"""Which images file volumes and cdroms take (on an in-memory store): a refusal names the image and what it is."""

from __future__ import annotations

import pytest

from agentkit.errors import Invalid
from coordinator.domain.filestorage import images
from coordinator.domain.images.records import ImageRecord
from coordinator.etcd import keys

from ..memstore import MemoryStore


async def test_an_image_of_another_media_type_is_refused_naming_both_types():
    store = MemoryStore()
    disk = ImageRecord(uuid="i1", name="tiny", backup_storage_uuid="b1", backup_storage_type="ImageStore", format="raw",
                       url="file:///tiny.raw", media_type="RootVolumeTemplate", status="Ready", sha256="0" * 64,
                       size=1 << 20, url_secret="", created_at=0, updated_at=0)
    await store.put(keys.image(disk.uuid), disk.model_dump())
    with pytest.raises(Invalid) as e:
        await images.image(store, "i1", ("ISO",), "iso_uuid")
    assert (e.value.field, e.value.message) == ("iso_uuid", "image tiny has media type RootVolumeTemplate; iso_uuid "
                                                            "takes one of media type ISO")
