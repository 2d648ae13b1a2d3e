"""Commands typed into the tiny guest's serial shell (`hsaction=hold` runs one on ttyS0), answers read back.

The typed line runs the command with its output captured and prints one line `HS-OUT-<tag> rc=<status>
<output as base64>`: one write, so the guest's own console lines (its hold loop, kernel messages) cannot
split it, and whatever the command prints (binary, long lines, prompts) arrives whole. The format string is
typed as `HS-OUT-%s`, so the shell's echo of the typed line never matches the answer.

`python -m testbed.guestshell SOCKET TAG COMMAND [TIMEOUT]` types into the serial port's unix socket and
prints the answer as JSON; `ask` runs it inside a host's mount namespace, where libvirt's socket is;
`ask_console` asks through a serial console's websocket (the console proxy's; `agentkit.consoles.websocket_url`
is the one a console page's URL opens).
"""

from __future__ import annotations

import base64
import json
import re
import socket
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import aiohttp

from agentkit.proc import run
from testbed.kvmhost import KvmHost

TYPE_DELAY = 0.005  # between typed characters, as a person's terminal would send them


@dataclass(frozen=True)
class Answer:
    rc: int
    output: str


def typed(command: str, tag: str) -> str:
    """The line to type (ending in a carriage return, the Enter key) so `command`'s answer comes back under
    `tag` (letters, digits, dashes)."""
    if not re.fullmatch(r"[A-Za-z0-9-]+", tag):
        raise ValueError(f"tag {tag!r}: letters, digits and dashes only")
    encoded = '"$(printf %s "$o" | base64 -w0)"'
    return f"o=$( {{ {command}; }} 2>&1); printf 'HS-OUT-%s rc=%s %s\\n' {tag} $? {encoded}\r"


def answer(text: str, tag: str) -> Answer | None:
    """The answer under `tag` in what the serial port printed, once its whole line is there."""
    found = re.search(rf"^HS-OUT-{tag} rc=(\d+) ([A-Za-z0-9+/=]*)\r?\n", text, re.M)
    if found is None:
        return None
    return Answer(int(found.group(1)), base64.b64decode(found.group(2)).decode(errors="replace"))


def converse(sock: str, tag: str, command: str, timeout: float) -> Answer:
    """Type `command` into the serial port at the unix socket `sock` and read its answer from the same port."""
    seen = b""
    with socket.socket(socket.AF_UNIX) as s:
        s.connect(sock)
        for c in typed(command, tag):
            s.sendall(c.encode())
            time.sleep(TYPE_DELAY)
        s.settimeout(0.5)
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            try:
                chunk = s.recv(65536)
            except TimeoutError:
                continue
            if not chunk:
                break
            seen += chunk
            if (found := answer(seen.decode(errors="replace"), tag)) is not None:
                return found
    raise AssertionError(f"the guest never answered {tag}: {seen[-1000:].decode(errors='replace')!r}")


async def ask_console(ws: aiohttp.ClientWebSocketResponse, command: str, tag: str, timeout: float = 30) -> Answer:
    """`command`'s answer through a serial console websocket (binary messages: the console proxy's)."""
    await ws.send_bytes(typed(command, tag).encode())
    seen = b""
    deadline = time.monotonic() + timeout
    while (found := answer(seen.decode(errors="replace"), tag)) is None:
        try:
            msg = await ws.receive(timeout=max(0.01, deadline - time.monotonic()))  # 0 would mean none
        except TimeoutError:
            raise AssertionError(f"the guest never answered {tag}: {seen[-1000:].decode(errors='replace')!r}") from None
        if msg.type is not aiohttp.WSMsgType.BINARY:
            raise AssertionError(f"the console ended ({msg.type.name} {msg.data} {msg.extra}) before {tag} came")
        seen += msg.data
    return found


def ask(host: KvmHost, sock: Path, command: str, tag: str, timeout: float = 30) -> Answer:
    """`command`'s answer from the guest whose serial socket is `sock` on `host` (in libvirtd's mount
    namespace). Only one client can hold a serial socket: not while a console is open on it."""
    if host.libvirt.proc is None:
        raise RuntimeError(f"host {host.name}: its libvirtd is not running")
    out = run(["nsenter", f"--mount=/proc/{host.libvirt.proc.pid}/ns/mnt", sys.executable, "-m", "testbed.guestshell",
               str(sock), tag, command, str(timeout)], timeout=timeout + 30)
    return Answer(**json.loads(out.stdout))


def main(argv: list[str]) -> None:
    sock, tag, command, *rest = argv
    found = converse(sock, tag, command, float(rest[0]) if rest else 30)
    print(json.dumps({"rc": found.rc, "output": found.output}))


if __name__ == "__main__":
    main(sys.argv[1:])
