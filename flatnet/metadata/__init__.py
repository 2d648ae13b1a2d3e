"""Per-host metadata server (EC2, OpenStack and CloudStack flavours) with spoof-proof VM identity."""

from flatnet.metadata.server import MetadataError, MetadataService
from flatnet.metadata.settings import MetadataSettings

__all__ = ["MetadataError", "MetadataService", "MetadataSettings"]
