"""The imagestore deployer: the image store agent, on a host of its own or next to other agents.

It needs `qemu-img` (Debian qemu-utils) to inspect images and nothing else from the system. Like the
cephagent it serves an API the coordinator calls, guarded by the host's token (its `token` setting,
which also keys the read tickets hosts present); it does not dial out.
"""

from deployer.agentspec import AgentSpec

SPEC = AgentSpec(
    name="imagestore",
    description="HostStack image store",
    packages=("qemu-utils", "python3", "python3-venv"),
    requirements=("aiohttp", "pydantic"),
    config_keys=(("token", "host_token"),),
)
