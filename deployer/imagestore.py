"""The imagestore deployer: the image store agent, on a host of its own or next to other agents.

It needs `qemu-img` (Debian qemu-utils) to inspect images and nothing else from the system. Like the
cephagent it serves an API the coordinator calls over TLS, guarded by the host's token (its `token`
setting, which also keys the read tickets hosts present); it does not dial out, so the deploy brings its
certificate (issued by the coordinator for the host's address) and renews it. Its /metrics takes the
scrapers' `metrics_token` too, as a console proxy's does.
"""

from deployer.agentspec import AgentSpec

SPEC = AgentSpec(
    name="imagestore",
    description="HostStack image store",
    packages=("qemu-utils", "python3", "python3-venv"),
    requirements=("aiohttp", "pydantic", "cryptography"),
    config_keys=(("token", "host_token"), ("metrics_token", "metrics_token")),
    own_certificate=True,
)
