"""HTTP resources of the coordinator, one module per resource."""
