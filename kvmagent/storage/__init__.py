"""File-based primary storage on a KVM host: LocalStorage and SharedMountPoint, their image caches, volumes.

One concept per module, behind the `StorageComponent` (`component.py`, a pass of the agent's pipeline
and the answers the VMs ask of it):
- `layout.py`: the on-disk layout of a storage directory and `confine`, the one path rule;
- `mounts.py`: is the directory usable here (mount point or marker, heartbeats);
- `tickets.py`: where to read an image (a read ticket from the coordinator); `fetch.py`: the download,
  resumed with Range requests, verified by size and sha256;
- `imagecache.py`: the per-storage image cache (fetched once, read-only, collected when unused);
- `plan.py`: a volume's next step toward its spec (pure), `record.py`: the volume's record on disk;
- `volumes.py`: the steps done with qemu-img (`qemuimg.py`) or libvirt under a running VM (`holders.py`);
- `exports.py`: images made from volumes; `capacity.py`: the figures; `reports.py`: what is reported;
- `settings.py`: the `[storage]` section of the agent's config.
"""

from kvmagent.storage.component import StorageComponent
from kvmagent.storage.holders import LibvirtHolders
from kvmagent.storage.settings import StorageSettings
from kvmagent.storage.tickets import Tickets

__all__ = ["LibvirtHolders", "StorageComponent", "StorageSettings", "Tickets"]
