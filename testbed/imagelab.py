"""An image store on the test bed: lighttpd in one namespace serving a directory of image files, the
real `imagestore` in another (not started: tests and benchmarks choose its settings), a veth between.
"""

from __future__ import annotations

from pathlib import Path

from testbed.imagestore import ImageStoreProcess
from testbed.netns import Run
from testbed.webserver import WebServer


class ImageLab:
    """`tcp_buffer`: cap both namespaces' TCP buffers (their own sysctls), so that the bytes in flight when
    a transfer breaks are few and known (tests of resumption bound what is fetched twice by them)."""

    def __init__(self, run: Run, files: Path, slow_kbps: int = 4096, tcp_buffer: int | None = None,
                 **store_settings: object):
        net = run.subnet()
        self.run, self.files = run, files
        self.web_address, self.store_address = str(net[2]), str(net[1])
        self.web_ns, self.store_ns = run.netns("web"), run.netns("store")
        run.veth(self.web_ns, "eth0", self.store_ns, "eth0")
        self.web_ns.ip("addr", "add", f"{self.web_address}/24", "dev", "eth0")
        self.store_ns.ip("addr", "add", f"{self.store_address}/24", "dev", "eth0")
        self.tcp_buffer = tcp_buffer
        if tcp_buffer is not None:
            self.store_ns.sh("sysctl", "-qw", f"net.ipv4.tcp_rmem=4096 65536 {tcp_buffer}")
            self.web_ns.sh("sysctl", "-qw", f"net.ipv4.tcp_wmem=4096 65536 {tcp_buffer}")
        self.web = WebServer(self.web_ns, files, self.web_address, slow_kbps=slow_kbps)
        self.store = ImageStoreProcess(self.store_ns, run.path("store-root"), self.store_address,
                                       file_roots=[files / "allowed"], settings=store_settings)

    def start(self) -> ImageLab:
        self.web.start()
        self.store.start()
        return self

    def stop(self) -> None:
        self.store.stop()
        self.web.stop()
