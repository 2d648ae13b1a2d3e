"""File-based primary storage: LocalStorage and SharedMountPoint, their volumes and capacity (docs/storage.md).

- `records.py`: what etcd holds (a storage, a volume) and how a volume renders into a host's stream;
- `storages.py`: adding, attaching to hosts, showing (with each host's report) and deleting storages;
- `capacity.py`: reservations of virtual bytes in etcd transactions, thin, with over-provisioning;
- `placement.py`: which host (and storage scope) takes a new volume;
- `volumes.py`: creating, resizing, snapshotting, reverting, attaching and deleting volumes;
- `images.py`: an image as hosts fetch it (`ImageRef`), from the image's record;
- `vmdisks.py`: a new VM's root, data and ISO from images, in the VM's own transaction;
- `handover.py`: a deleted host's volumes: LocalStorage ones refuse the delete, shared ones go to another host.
"""
