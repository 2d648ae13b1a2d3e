"""The cephagent deployer: the storage agent on Ceph mon hosts.

rados/rbd come from Debian (python3-rados, python3-rbd, matching the cluster's librados); the agent's
venv sees them because it is made with --system-site-packages (`system_site_packages`). The agent serves an API the
coordinator calls over TLS, guarded by the host's token (its `token` setting); it does not dial out, so
the deploy brings its certificate (issued by the coordinator for the host's address) and renews it. Its /metrics
and /health also take the scrapers' `metrics_token`, as a kvmagent's and a console proxy's do.
"""

from deployer.agentspec import AgentSpec
from deployer.service import SANDBOX

SPEC = AgentSpec(
    name="cephagent",
    description="HostStack Ceph storage agent",
    packages=("python3-rados", "python3-rbd", "ceph-common", "python3", "python3-venv"),
    requirements=("aiohttp", "pydantic", "cryptography"),
    config_keys=(("token", "host_token"), ("metrics_token", "metrics_token")),
    own_certificate=True,
    system_site_packages=True,
    sandbox=(*SANDBOX, ("StateDirectory", "hoststack/cephagent")),  # its tmp_dir: downloads, conversions
)
