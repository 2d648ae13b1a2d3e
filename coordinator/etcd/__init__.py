"""The coordinator's only door to etcd: the store driver, the key schema, and helpers on top of it."""
