"""`hs-ctl`: operate a control node (etcd + coordinator) — install, start/stop, status, backup, restore,
the backup schedule, upgrades. See docs/operations.md.

Backups and restores run on the node that holds etcd's data; install and upgrade reach a node through
the deployer (SSH and the ansible-core API) and can run anywhere.
"""
