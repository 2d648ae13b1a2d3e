"""What every HostStack process shares: wire models, the coordinator link, config, logging, subprocesses."""

__version__ = "0.1.0"
