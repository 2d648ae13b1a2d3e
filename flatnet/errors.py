"""flatnet's expected failures: a dataplane object could not be made now and is retried on the next apply.

Each subclass names what failed (os-vif style, `agentkit.errors`); library failures (netlink, `nft`,
sockets) are translated into these at the wrapper with `raise … from`, so callers catch one base class.
"""

from __future__ import annotations

from agentkit.errors import Unavailable


class FlatnetError(Unavailable):
    """Base of flatnet's failures: the object is left as it is and retried on the next apply."""

    code = "flatnet_unavailable"


class NamespaceError(FlatnetError):
    """A network namespace or a link, address, neighbour or route in it could not be set up."""

    code = "namespace_unavailable"
    msg_fmt = "namespace {netns}: {reason}"


class NftError(FlatnetError):
    """An nftables table could not be read or replaced."""

    code = "nft_unavailable"
    msg_fmt = "nft table {table} in {netns}: {reason}"


class EipError(FlatnetError):
    """An EIP namespace could not be set up now (say, its bridge is missing)."""

    code = "eip_unavailable"


class MetadataError(FlatnetError):
    """A namespace could not be served metadata: its sockets could not be created or bound."""

    code = "metadata_unavailable"
