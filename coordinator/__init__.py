"""The coordinator: a stateless HTTP API over etcd; the only etcd client in HostStack."""
