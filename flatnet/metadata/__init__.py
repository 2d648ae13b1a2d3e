"""Per-host metadata server (EC2, OpenStack and CloudStack flavours) with spoof-proof VM identity."""

from flatnet.errors import MetadataError
from flatnet.metadata.server import MetadataService
from flatnet.metadata.settings import MetadataSettings

__all__ = ["MetadataError", "MetadataService", "MetadataSettings"]
