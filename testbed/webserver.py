"""lighttpd serving a directory of files from a namespace, with an access log tests can read.

A real server with real `Range`/`If-Range` handling and ETags, as image sources are on the Internet.
`/slow/<file>` serves the same files throttled to `slow_kbps` (to catch a download in the middle);
every request is logged with its status, the bytes sent and its Range and If-Range headers, also
when the client went away mid-body.
"""

from __future__ import annotations

import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from testbed.netns import Netns

CONFIG = """\
server.modules = ("mod_alias", "mod_accesslog")
server.document-root = "{docroot}"
server.bind = "{address}"
server.port = {port}
server.pid-file = "{dir}/lighttpd.pid"
server.errorlog = "{dir}/error.log"
server.max-keep-alive-requests = 0
accesslog.filename = "{dir}/access.log"
accesslog.format = "%r|%>s|%b|%{{Range}}i|%{{If-Range}}i"
mimetype.assign = ("" => "application/octet-stream")
alias.url = ("/slow/" => "{docroot}/")
$HTTP["url"] =~ "^/slow/" {{
    connection.kbytes-per-second = {slow_kbps}
}}
"""


@dataclass(frozen=True)
class Hit:
    method: str
    path: str
    status: int
    sent: int  # body bytes
    range: str | None
    if_range: str | None


class WebServer:
    def __init__(self, ns: Netns, docroot: Path, address: str, port: int = 80, slow_kbps: int = 2048):
        self.ns, self.docroot, self.address, self.port = ns, docroot, address, port
        self.dir = ns.run.path(f"lighttpd-{ns.name}-{port}")
        self.dir.mkdir(parents=True, exist_ok=True)
        self.conf = self.dir / "lighttpd.conf"
        self.conf.write_text(CONFIG.format(docroot=docroot, address=address, port=port, dir=self.dir,
                                           slow_kbps=slow_kbps))
        self.proc: subprocess.Popen[bytes] | None = None

    def url(self, path: str) -> str:
        return f"http://{self.address}:{self.port}/{path.lstrip('/')}"

    def start(self) -> WebServer:
        self.proc = self.ns.popen(["lighttpd", "-D", "-f", str(self.conf)], log_name=f"lighttpd-{self.port}")
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.ns.sh("ss", "-Htln", f"sport = :{self.port}").stdout.strip():
                return self
            if self.proc.poll() is not None:
                raise RuntimeError(f"lighttpd exited {self.proc.returncode}: {self.errors()}")
            time.sleep(0.05)
        raise RuntimeError("lighttpd did not listen")

    def cut(self) -> None:
        """Break every open connection at the server's end (SOCK_DESTROY: the client gets a reset)."""
        self.ns.sh("ss", "-K", "-t", "state", "established", f"sport = :{self.port}")

    def errors(self) -> str:
        path = self.dir / "error.log"
        return path.read_text()[-2000:] if path.exists() else ""

    def hits(self, path: str | None = None, at_least: int = 0, timeout: float = 5) -> list[Hit]:
        """The access log of one path (or all): lighttpd logs a request when it ends and flushes its log
        in the background, so this waits up to `timeout` s for `at_least` entries, then for the log to settle."""
        deadline, seen = time.monotonic() + timeout, -1
        while True:
            found = self._read(path)
            if (len(found) >= at_least and len(found) == seen) or time.monotonic() > deadline:
                return found
            seen = len(found) if len(found) >= at_least else -1
            time.sleep(0.5)

    def _read(self, path: str | None) -> list[Hit]:
        log = self.dir / "access.log"
        out = []
        for line in log.read_text().splitlines() if log.exists() else []:
            request, status, sent, rng, if_range = line.rsplit("|", 4)
            method, target, _ = request.split(" ")
            hit = Hit(method, target, int(status), 0 if sent == "-" else int(sent), None if rng == "-" else rng,
                      None if if_range == "-" else if_range)
            if path is None or hit.path == path:
                out.append(hit)
        return out

    def stop(self) -> None:
        if self.proc is not None:
            self.ns.run.stop(self.proc)
            self.proc = None
