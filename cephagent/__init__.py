"""cephagent: Ceph backup and primary storage for HostStack, over librados/librbd on the mon hosts."""
