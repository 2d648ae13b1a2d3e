"""EC2-form metadata trees: directories list their children one per line, subdirectories end with `/`.

The EC2 and CloudStack flavours build a `Dir` for the caller and let `serve` walk the request path; a
directory answers with its listing, a leaf with its bytes, anything else with 404.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Union

from aiohttp import web

Node = Union["Dir", str, bytes]


@dataclass
class Dir:
    """A directory. `labels` overrides how a child is listed: EC2 lists public key 0 as `0=<name>`."""

    children: dict[str, Node]
    labels: dict[str, str] = field(default_factory=dict)

    def listing(self) -> str:
        return "\n".join(
            self.labels.get(name) or (f"{name}/" if isinstance(child, Dir) else name)
            for name, child in self.children.items()
        )


def walk(node: Node, parts: list[str]) -> Node | None:
    """The node at `parts` below `node` (empty parts from doubled or trailing slashes are skipped)."""
    for part in parts:
        if not part:
            continue
        if not isinstance(node, Dir) or part not in node.children:
            return None
        node = node.children[part]
    return node


def respond(node: Node | None) -> web.Response:
    """Render a node as EC2 does: listings and text as text/plain, bytes (user-data) as octet-stream."""
    if node is None:
        raise web.HTTPNotFound(text="Not Found")
    if isinstance(node, Dir):
        return web.Response(text=node.listing())
    if isinstance(node, bytes):
        return web.Response(body=node, content_type="application/octet-stream")
    return web.Response(text=node)


def serve(root: Node, path: str) -> web.Response:
    return respond(walk(root, path.split("/")))
