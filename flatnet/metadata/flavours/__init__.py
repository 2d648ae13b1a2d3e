"""The metadata API flavours, one per module (cloud-init's `sources/` pattern), and their registry.

Each module renders what `instance.Caller` says in the shape its guests' datasource reads and ends with
a `FLAVOUR`; `FLAVOURS` lists them in the order their routes are tried. `tree` is their shared helper
for EC2-form directory trees.
"""

from __future__ import annotations

from flatnet.metadata.flavours import cloudstack, ec2, openstack
from flatnet.metadata.flavours.base import Flavour, Listen
from flatnet.metadata.http.routes import Route

FLAVOURS: tuple[Flavour, ...] = (openstack.FLAVOUR, ec2.FLAVOUR, cloudstack.FLAVOUR)


def routes(listen: Listen) -> tuple[Route, ...]:
    """The routes of every flavour served on `listen`, in registry order."""
    return tuple(route for flavour in FLAVOURS if flavour.listen is listen for route in flavour.routes)
