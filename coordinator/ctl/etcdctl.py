"""etcd through its own command-line client, reached as this node's coordinator reaches it.

`hs-ctl backup` takes etcd's snapshot with `etcdctl snapshot save` and records it with `etcdctl txn`
instead of speaking etcd's gRPC API itself: the kept tool streams the database as fast as any client
and starts like the Go binary it is, where a Python gRPC client pays more for importing gRPC, protobuf
and asyncio than the stream of a large cloud's database costs (docs/benchmarks.md, `backup`). The
record's etcdctl starts with the snapshot (`Recorder`): `txn` reaches etcd and logs in before it reads
its requests from stdin, so only the put itself is left once the snapshot is complete.

The members, TLS files and credentials are the coordinator's own settings (`EtcdConfig`). The user and
password go in etcdctl's environment (`ETCDCTL_USER`, `ETCDCTL_PASSWORD`), never on its command line,
which every user of the machine can read; `ETCDCTL_*` variables of the caller's are not passed on.
etcdctl runs on one Go processor (`GOMAXPROCS=1`): it has one stream to write (or one request to make),
and with a processor per core its scheduler and garbage collector used a third more CPU, taken from the
etcd that serves the snapshot on the same node (a quarter less CPU for 27.6 MB at load 4).
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

from coordinator.ctl.errors import BackupFailed, EtcdUnavailable
from coordinator.etcd.endpoints import Endpoint, EtcdConfig, parse

ANSWER_POLL = 0.005  # seconds between looks at a snapshot's first bytes


class Etcdctl(NamedTuple):
    """etcdctl for `members`, with the TLS files, timeouts and credentials of `config`."""

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
        return environment(self.config)

    def snapshot(self, target: Path, timeout: float, started: Callable[[], None] = lambda: None) -> None:
        """etcd's snapshot, complete and synced, at `target` (etcdctl writes `<target>.part` and renames
        it), from the first member that gives it within `timeout`; BackupFailed else. `started()` runs
        once the first etcdctl has started (an exception from it ends the snapshot)."""
        deadline = time.monotonic() + timeout
        failures: list[str] = []
        for member in self.members:  # one at a time: etcd streams a snapshot from one member only
            try:
                proc = subprocess.Popen(self.argv((member,), "snapshot", "save", str(target)),  # noqa: S603
                                        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                        stderr=subprocess.PIPE, env=self.env())
            except OSError as e:
                raise BackupFailed(f"running etcdctl: {e}; no backup was kept") from None
            try:
                if not failures:
                    started()
                if not self._answered(proc, target, min(self.config.timeout, deadline - time.monotonic())):
                    if time.monotonic() >= deadline:
                        raise subprocess.TimeoutExpired(proc.args, timeout)
                    failures.append(f"{member}: no answer within {self.config.timeout:g} s")
                    continue  # killed below
                _, err = proc.communicate(timeout=max(deadline - time.monotonic(), 0.001))
            except subprocess.TimeoutExpired:
                raise BackupFailed(f"the backup took more than {timeout:g} s; no backup was kept") from None
            finally:
                if proc.returncode is None:
                    proc.kill()
                    proc.communicate()
                self.partial(target).unlink(missing_ok=True)  # left by an etcdctl that was killed
            if proc.returncode == 0:
                return
            failures.append(f"{member}: {said(err.decode(errors='replace'), proc.returncode)}")
        why = "; ".join(failures)
        raise BackupFailed(f"etcd did not give its snapshot: {why}{login(self.config, why)}; no backup was kept")

    def _answered(self, proc: subprocess.Popen[bytes], target: Path, within: float) -> bool:
        """Whether, within `within` seconds, etcdctl ended or its member began the stream (bytes in the
        partial file). etcdctl 3.4 without credentials waits for a member that does not answer until it is
        killed, whatever its dial timeout (with them, logging in fails at the dial timeout)."""
        until, partial = time.monotonic() + within, self.partial(target)
        while True:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(ANSWER_POLL)
                return True
            with contextlib.suppress(FileNotFoundError):
                if partial.stat().st_size > 0:
                    return True
            if time.monotonic() >= until:
                return False

    @staticmethod
    def partial(target: Path) -> Path:
        """Where `etcdctl snapshot save` writes the snapshot before it renames it to `target`."""
        return Path(f"{target}.part")

    def recorder(self, key: str) -> Recorder:
        """`etcdctl txn` to put a value under `key` once it is known (`Recorder`: started apart)."""
        return Recorder(self, key)


class Recorder:
    """One put, its etcdctl started (`start`) before its value is known: `etcdctl txn` dials the members
    and authenticates (a bcrypt check on etcd's side where auth is on) while the caller works, then
    waits for its requests on stdin. Closed without `send`, it is killed and puts nothing."""

    def __init__(self, etcdctl: Etcdctl, key: str):
        self.key, self.timeout = key, etcdctl.config.timeout + etcdctl.config.attempt_timeout
        self._etcdctl = etcdctl
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        """Run etcdctl (OSError as Popen raises it)."""
        self.proc = subprocess.Popen(self._etcdctl.argv(self._etcdctl.members, "txn"),  # noqa: S603
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     env=self._etcdctl.env())

    def __enter__(self) -> Recorder:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.proc is not None and self.proc.returncode is None:  # not sent, or not answered in time
            self.proc.kill()
            self.proc.communicate()

    def send(self, value: str) -> None:
        """Hand etcdctl the put of `value` (`wait` tells whether etcd took it)."""
        assert self.proc is not None and self.proc.stdin is not None
        try:  # the input's last empty line ends it: etcdctl commits without waiting for the end of stdin
            self.proc.stdin.write(txn_put(self.key, value).encode())
            self.proc.stdin.flush()
        except BrokenPipeError:
            pass  # etcdctl has ended already: `wait` says why

    def wait(self) -> None:
        """Once `send` was called: EtcdUnavailable unless a member took the put within the configured timeouts."""
        assert self.proc is not None
        try:
            _, err = self.proc.communicate(timeout=self.timeout)
        except subprocess.TimeoutExpired:
            raise EtcdUnavailable(f"etcd did not take {self.key} within {self.timeout:g} s") from None
        if self.proc.returncode != 0:
            why = said(err.decode(errors="replace"), self.proc.returncode)
            raise EtcdUnavailable(f"etcd did not take {self.key}: {why}{login(self._etcdctl.config, why)}")


def environment(config: EtcdConfig) -> dict[str, str]:
    """etcdctl's environment: ours without the caller's `ETCDCTL_*`, one Go processor, and the credentials
    of `config` (never on the command line)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("ETCDCTL_")}
    env.update(ETCDCTL_API="3", GOMAXPROCS="1")
    if config.user is not None:
        env.update(ETCDCTL_USER=config.user, ETCDCTL_PASSWORD=config.password or "")
    return env


def txn_put(key: str, value: str) -> str:
    """`etcdctl txn`'s input for one put whatever etcd holds: no comparisons, the put, no requests for
    failure, each list ended by an empty line. Key and value are quoted as Go reads quoted strings
    (JSON's escapes are Go's; other characters stay as they are, in UTF-8)."""
    return f"\nput -- {json.dumps(key, ensure_ascii=False)} {json.dumps(value, ensure_ascii=False)}\n\n\n"


def login(config: EtcdConfig, why: str) -> str:
    """Who etcdctl logged in as, where etcd refused the login or the request: the root user of `etcd_root`,
    or the coordinator's own user (ctl.settings `etcd`), whose password or role is then the one to check."""
    refused = "authentication failed" in why or "permission denied" in why
    return f" (as etcd user {config.user})" if config.user and refused else ""


def said(stderr: str, rc: int) -> str:
    """etcdctl's own error line (`Error: …`), the last of what it wrote after its logs."""
    lines = [line for line in stderr.splitlines() if line.strip()]
    return lines[-1].strip() if lines else f"etcdctl exited {rc}"
