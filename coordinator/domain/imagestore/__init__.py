"""Image store backup storage: the coordinator side of the imagestore agents (docs/storage.md)."""
