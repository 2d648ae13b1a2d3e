"""The kvmagent deployer: the KVM host agent, with libvirt/qemu, nftables and netlink on every KVM host.

Its Python side needs libvirt-python (built on the controller against libvirt-dev, so the host
needs no compiler), pyroute2 for netlink, dnslib for the in-process DNS, aiohttp, pydantic and
cryptography (its certificate).
"""

from deployer.agentspec import AgentSpec
from deployer.service import KVMAGENT_SANDBOX

SPEC = AgentSpec(
    name="kvmagent",
    description="HostStack KVM host agent",
    packages=("libvirt-daemon-system", "qemu-system-x86", "qemu-utils", "nftables", "iproute2", "python3",
              "python3-venv"),
    requirements=("aiohttp", "pydantic", "libvirt-python", "pyroute2", "dnslib", "cryptography"),
    config_keys=(("coordinator_url", "coordinator_url"), ("host_uuid", "host_uuid"), ("host_token", "host_token"),
                 ("api_token", "api_token"), ("metrics_token", "metrics_token")),
    after=("network-online.target", "libvirtd.service"),
    sandbox=KVMAGENT_SANDBOX,
    renews_token=True,
)
