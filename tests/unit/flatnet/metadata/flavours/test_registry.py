"""The flavour registry: every flavour module is listed once, and each listening address serves its own."""

from __future__ import annotations

import pkgutil

from flatnet.metadata import flavours
from flatnet.metadata.flavours import FLAVOURS, routes
from flatnet.metadata.flavours.base import Listen
from flatnet.metadata.http import imdsv2
from flatnet.metadata.server import DATA_SERVER_ROUTES, IMDS_ROUTES


def test_every_flavour_module_is_registered_once():
    helpers = {"base", "tree"}
    modules = {m.name for m in pkgutil.iter_modules(flavours.__path__)} - helpers
    assert sorted(f.name for f in FLAVOURS) == sorted(modules) == ["cloudstack", "ec2", "openstack"]


def test_each_address_serves_its_flavours_after_the_token_request():
    assert [f.name for f in FLAVOURS if f.listen is Listen.METADATA_ADDRESS] == ["openstack", "ec2"]
    assert IMDS_ROUTES == (*imdsv2.ROUTES, *routes(Listen.METADATA_ADDRESS))
    assert DATA_SERVER_ROUTES == (*imdsv2.ROUTES, *routes(Listen.DHCP_ADDRESS))
    assert {r.pattern for r in routes(Listen.DHCP_ADDRESS)} == {"/", "/latest(?P<path>(?:/.*)?)"}
