"""ansible connection plugins of the deployer, loaded by name from this directory (see `engine._init`)."""
