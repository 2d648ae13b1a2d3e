"""Replays a recorded VNC session from a unix socket or a TCP port, as fast as the reader takes it.

qemu paces its VNC updates with a refresh timer (30 ms or more), a fixed ceiling that would measure qemu
rather than a relay. So the console benchmark records the server's side of a real session with the
tiny guest (handshake, a full-screen Raw update, a small-region one) and this server plays it back:
after the RFB 3.8 handshake it answers every FramebufferUpdateRequest at once with the recorded full
update when the whole screen is asked for, else the small one. One thread per client, blocking `sendall`.

`python -m testbed.vncreplay SOCKET|HOST:PORT RECORDING_DIR` (files `init`, `full`, `small` written by `Recording`).
"""

from __future__ import annotations

import os
import socket
import struct
import sys
import threading
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Recording:
    version: bytes  # the server's 12-byte ProtocolVersion
    security: bytes  # security types offered
    result_and_init: bytes  # SecurityResult + ServerInit
    full: bytes  # FramebufferUpdate of the whole screen
    small: bytes  # FramebufferUpdate of a small region

    @property
    def size(self) -> tuple[int, int]:
        return struct.unpack(">HH", self.result_and_init[4:8])

    def save(self, d: Path) -> None:
        d.mkdir(parents=True, exist_ok=True)
        for name in ("version", "security", "result_and_init", "full", "small"):
            (d / name).write_bytes(getattr(self, name))

    @classmethod
    def load(cls, d: Path) -> Recording:
        return cls(*((d / n).read_bytes() for n in ("version", "security", "result_and_init", "full", "small")))


def _recv(conn: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = conn.recv(n - len(data))
        if not chunk:
            raise EOFError
        data += chunk
    return data


def serve_client(conn: socket.socket, rec: Recording) -> None:
    width, height = rec.size
    with conn:
        try:
            conn.sendall(rec.version)
            _recv(conn, 12)
            conn.sendall(rec.security)
            _recv(conn, 1)
            conn.sendall(rec.result_and_init)
            _recv(conn, 1)  # ClientInit
            while True:
                (kind,) = _recv(conn, 1)
                if kind == 0:  # SetPixelFormat
                    _recv(conn, 19)
                elif kind == 2:  # SetEncodings
                    (count,) = struct.unpack(">xH", _recv(conn, 3))
                    _recv(conn, 4 * count)
                elif kind == 3:
                    _, _, _, w, h = struct.unpack(">BHHHH", _recv(conn, 9))
                    conn.sendall(rec.full if (w, h) == (width, height) else rec.small)
                else:
                    raise EOFError
        except (EOFError, OSError):
            return


def main() -> None:
    where, rec = sys.argv[1], Recording.load(Path(sys.argv[2]))
    host, _, port = where.rpartition(":")
    if port.isdigit():  # a VNC server's TCP port, as a hypervisor's qemu listens
        server = socket.create_server((host, int(port)))
    else:
        if os.path.exists(where):
            os.unlink(where)
        server = socket.socket(socket.AF_UNIX)
        server.bind(where)
    with server:
        server.listen(64)
        while True:
            conn, _ = server.accept()
            threading.Thread(target=serve_client, args=(conn, rec), daemon=True).start()


if __name__ == "__main__":
    main()
