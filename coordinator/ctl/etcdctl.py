"""etcd through its own command-line client, reached as this node's coordinator reaches it.

`hs-ctl backup` takes etcd's snapshot with `etcdctl snapshot save` and records it with `etcdctl put`
instead of speaking etcd's gRPC API itself: the kept tool streams the database as fast as any client
and starts like the Go binary it is, where a Python gRPC client pays more for importing gRPC, protobuf
and asyncio than the stream of a large cloud's database costs (docs/benchmarks.md, `backup`).

The members, TLS files and credentials are the coordinator's own settings (`EtcdConfig`). The user and
password go in etcdctl's environment (`ETCDCTL_USER`, `ETCDCTL_PASSWORD`), never on its command line,
which every user of the machine can read; `ETCDCTL_*` variables of the caller's are not passed on.
"""

from __future__ import annotations

import os
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from agentkit.proc import ProcessError, run
from coordinator.ctl.errors import BackupFailed, EtcdUnavailable
from coordinator.etcd.endpoints import Endpoint, EtcdConfig, parse


@dataclass(frozen=True)
class Etcdctl:
    config: EtcdConfig
    members: tuple[Endpoint, ...]
    binary: str = "etcdctl"

    @classmethod
    def of(cls, config: EtcdConfig, binary: str = "etcdctl") -> Etcdctl:
        """The members as listed, or as the SRV records of `discovery_srv` name them."""
        if not config.discovery_srv:
            return cls(config, tuple(parse(config.endpoints, config.tls.configured)), binary)
        import asyncio  # only for the DNS queries of a discovery (dnslib's, as the coordinator's)

        from coordinator.etcd import srv

        try:
            found = asyncio.run(srv.discover(config.discovery_srv, config.discovery_srv_name, config.nameservers))
        except srv.DiscoveryFailed as e:
            raise EtcdUnavailable(f"etcd discovery: {e}") from None
        return cls(config, tuple(found), binary)

    def argv(self, members: tuple[Endpoint, ...], *args: str) -> list[str]:
        tls = self.config.tls
        files = [f"--{flag}={path}" for flag, path in (("cacert", tls.ca), ("cert", tls.cert), ("key", tls.key))
                 if path is not None]
        return [self.binary, f"--endpoints={','.join(map(str, members))}",
                f"--dial-timeout={self.config.attempt_timeout:g}s", *files, *args]

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("ETCDCTL_")}
        env["ETCDCTL_API"] = "3"
        if self.config.user is not None:
            env.update(ETCDCTL_USER=self.config.user, ETCDCTL_PASSWORD=self.config.password or "")
        return env

    def snapshot(self, target: Path, timeout: float) -> None:
        """etcd's snapshot, complete and synced, at `target` (etcdctl writes `<target>.part` and renames
        it), from the first member that gives it within `timeout`; BackupFailed else."""
        deadline, failures = time.monotonic() + timeout, []
        for member in self.members:  # one at a time: etcd streams a snapshot from one member only
            try:
                run(self.argv((member,), "snapshot", "save", str(target)), env=self.env(),
                    timeout=max(deadline - time.monotonic(), 0.001))
                return
            except ProcessError as e:
                failures.append(f"{member}: {_said(e)}")
            except subprocess.TimeoutExpired:
                raise BackupFailed(f"the backup took more than {timeout:g} s; no backup was kept") from None
            finally:
                self.partial(target).unlink(missing_ok=True)  # left by an etcdctl that was killed
        raise BackupFailed(f"etcd did not give its snapshot: {'; '.join(failures)}; no backup was kept")

    @staticmethod
    def partial(target: Path) -> Path:
        """Where `etcdctl snapshot save` writes the snapshot before it renames it to `target`."""
        return Path(f"{target}.part")

    def put(self, key: str, value: str) -> None:
        """`value` under `key`; EtcdUnavailable when no member took it within the configured timeout."""
        wait = self.config.timeout
        try:
            run(self.argv(self.members, f"--command-timeout={wait:g}s", "put", key, value), env=self.env(),
                timeout=wait + self.config.attempt_timeout)
        except ProcessError as e:
            raise EtcdUnavailable(f"etcd did not take {key}: {_said(e)}") from None
        except subprocess.TimeoutExpired:
            raise EtcdUnavailable(f"etcd did not take {key} within {wait:g} s") from None


def _said(e: ProcessError) -> str:
    """etcdctl's own error line (`Error: …`), the last of what it wrote after its logs."""
    lines = [line for line in e.stderr.splitlines() if line.strip()]
    return lines[-1].strip() if lines else f"etcdctl exited {e.rc}"
