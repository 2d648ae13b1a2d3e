"""Ceph backup and primary storage as the coordinator manages them through cephagents."""
