"""`python -m coordinator.cli` is `hs`."""

from coordinator.cli.main import main

main()
