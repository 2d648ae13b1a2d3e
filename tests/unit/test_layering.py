"""The import graph: packages and layers import only downward, and no modules import each other.

Read from the source with `ast` (type-only imports count: a cycle for type hints is still a cycle).
Layers, from the top: composition roots (`*.main`, `coordinator.app`) → agents and the coordinator's
`api`/`leader` → the host streams' watch cache `coordinator.fanout` (api only) → `coordinator.domain` →
`coordinator.etcd` → `agentkit`. The CLI talks to the
coordinator only through its HTTP client. `hs-ctl` (`coordinator.ctl`) operates a control node: it is
an etcd client (backups, restores, status read the store through the domain) and a deployer (install).
The same reading follows each deployed program's imports from its entry point: its venv must hold them.
"""

from __future__ import annotations

import ast
import importlib.metadata
import re
import sys
import tomllib
from pathlib import Path

import pytest

from coordinator.ctl import install
from deployer.agentspec import AgentSpec
from deployer.deploy import AGENTS

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("agentkit", "flatnet", "kvmagent", "cephagent", "imagestore", "deployer", "coordinator", "consoleproxy")
SHARED = ("agentkit",)
CEPHAGENT_CLIENT = ("cephagent.client", "cephagent.wire", "cephagent.errors", "cephagent.monurl")
IMAGESTORE_CLIENT = ("imagestore.client", "imagestore.wire", "imagestore.errors", "imagestore.tickets")

# What each package (or coordinator layer) may import from our tree besides itself and agentkit.
ALLOWED: dict[str, tuple[str, ...]] = {
    "agentkit": (),
    "flatnet": (),
    "cephagent": (),
    "imagestore": (),
    "deployer": (),
    "consoleproxy": (),
    "kvmagent": ("flatnet",),
    "coordinator.etcd": ("coordinator.settings",),
    "coordinator.domain": ("coordinator.etcd", "coordinator.settings", *CEPHAGENT_CLIENT, *IMAGESTORE_CLIENT),
    "coordinator.fanout": ("coordinator.domain", "coordinator.etcd"),
    "coordinator.api": ("coordinator.fanout", "coordinator.domain", "coordinator.etcd", "coordinator.settings"),
    "coordinator.leader": ("coordinator.domain", "coordinator.etcd", "coordinator.settings"),
    # `hs deploy` runs the deployer in-process; `hs ceph` reads the mons' SSH host keys from their monUrls
    "coordinator.cli": ("coordinator.client", "deployer", "cephagent.monurl"),
    # hs-ctl: backups and restores are etcd's (the coordinator package is its only client), installs the deployer's
    "coordinator.ctl": ("coordinator.domain", "coordinator.etcd", "coordinator.settings", "deployer"),
    "coordinator.client": (),
    "coordinator.settings": (),
    "coordinator.app": ("coordinator",),  # the composition root builds everything
    "coordinator.main": ("coordinator",),
}


def modules() -> dict[str, Path]:
    found = {}
    for pkg in PACKAGES:
        for path in sorted((ROOT / pkg).rglob("*.py")):
            parts = path.relative_to(ROOT).with_suffix("").parts
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            found[name] = path
    return found


class _Imports(ast.NodeVisitor):
    """What a module imports, as (module, name or None): `import m` is (m, None), `from m import n` is (m, n),
    relative imports made absolute; with `runtime`, not what `if TYPE_CHECKING:` imports."""

    def __init__(self, name: str, path: Path, runtime: bool = False):
        self.name, self.path, self.runtime = name, path, runtime
        self.found: list[tuple[str, str | None]] = []
        self.visit(ast.parse(path.read_text(), str(path)))

    def visit_If(self, node: ast.If) -> None:
        if self.runtime and getattr(node.test, "id", getattr(node.test, "attr", None)) == "TYPE_CHECKING":
            for stmt in node.orelse:
                self.visit(stmt)
        else:
            self.generic_visit(node)

    def visit_Import(self, node: ast.Import) -> None:
        self.found += [(a.name, None) for a in node.names]

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        base = node.module or ""
        if node.level:
            anchor = self.name.split(".")
            anchor = anchor if self.path.name == "__init__.py" else anchor[:-1]
            anchor = anchor[: len(anchor) - node.level + 1]
            base = ".".join([*anchor, base] if base else anchor)
        self.found += [(base, a.name) for a in node.names]


def imports(name: str, path: Path, known: set[str]) -> set[str]:
    """Our modules that `name` imports (resolved to the longest known module name)."""
    out = set()
    for base, item in _Imports(name, path).found:
        t = f"{base}.{item}" if item and f"{base}.{item}" in known else base
        while t and t not in known:
            t = t.rpartition(".")[0]
        if t and t != name:
            out.add(t)
    return out


def graph() -> dict[str, set[str]]:
    mods = modules()
    known = set(mods)
    return {name: imports(name, path, known) for name, path in mods.items()}


def unit_of(module: str) -> str:
    """The most specific key of ALLOWED that contains `module`."""
    best = module.split(".")[0]
    for key in ALLOWED:
        if (module == key or module.startswith(key + ".")) and len(key) > len(best):
            best = key
    return best


def test_no_upward_or_sideways_imports():
    wrong = []
    for mod, deps in graph().items():
        unit = unit_of(mod)
        for dep in deps:
            target = unit_of(dep)
            if target == unit or target in SHARED:
                continue
            if not any(dep == a or dep.startswith(a + ".") for a in ALLOWED.get(unit, ())):
                wrong.append(f"{mod} -> {dep}")
    assert not wrong, "imports against the layering:\n" + "\n".join(sorted(wrong))


def test_no_import_cycles():
    g = graph()
    cycles, state = [], {}

    def visit(node: str, stack: list[str]) -> None:
        state[node] = 1
        for dep in sorted(g.get(node, ())):
            if state.get(dep) == 1:
                cycles.append(" -> ".join([*stack[stack.index(dep):], dep]))
            elif dep not in state:
                visit(dep, [*stack, dep])
        state[node] = 2

    for mod in sorted(g):
        if mod not in state:
            visit(mod, [mod])
    assert not cycles, "import cycles:\n" + "\n".join(cycles)


def third_party(entries: list[str]) -> set[str]:
    """The top-level names of what is not ours nor the standard library that running `entries` imports,
    following every import of our own modules (a package's `__init__` runs too)."""
    mods = modules()
    seen: set[str] = set()
    found: set[str] = set()
    todo = list(entries)
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        top = name.split(".")[0]
        if top in PACKAGES:
            if name in mods:
                todo += [".".join(name.split(".")[:i]) for i in range(1, name.count(".") + 1)]
                for base, item in _Imports(name, mods[name], runtime=True).found:
                    todo += [base, f"{base}.{item}"] if item else [base]
        elif top not in sys.stdlib_module_names and top != "__future__":
            found.add(top)
    return found


# Modules an agent gets from its Debian packages (its venv sees the system's site-packages for them).
DEBIAN_MODULES = {"rados": "python3-rados", "rbd": "python3-rbd"}


def _dist(requirement: str) -> str:
    return re.split(r"[ ;<>=!~\[]", requirement, maxsplit=1)[0].lower().replace("_", "-")


def _entries(spec: AgentSpec) -> list[str]:
    """The modules that start what runs from `spec`'s venv: an agent's entry point; on a control node, the
    coordinator, hs-ctl, the console proxy, `hs`, and the deployer child the coordinator runs."""
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    if spec is not install.WHEELS:
        return [scripts[spec.name].split(":")[0]]
    node = ("hs-coordinator", "hs-ctl", "consoleproxy", "hs")
    return [scripts[n].split(":")[0] for n in node] + ["deployer.__main__"]


@pytest.mark.parametrize("spec", [*AGENTS.values(), install.WHEELS], ids=[*AGENTS, "control node"])
def test_a_venv_holds_what_its_programs_import(spec):
    """A venv holds its spec's requirements and theirs, and sees the host's site-packages only for the modules
    Debian alone ships (`system_site_packages`): a venv that saw them all hid a missing requirement wherever
    Debian has that module, maybe older (python3-cryptography 38 has no `x509.load_pem_x509_certificates`:
    every kvmagent deployed on a control node's host crashed renewing its certificate)."""
    installed = {_dist(r) for r in spec.requirements}
    theirs = (r for d in spec.requirements for r in importlib.metadata.requires(d) or () if "extra ==" not in r)
    installed |= {_dist(r) for r in theirs}
    by_module = importlib.metadata.packages_distributions()
    imported = third_party(_entries(spec))
    debian = {top for top in imported if DEBIAN_MODULES.get(top) in spec.packages}
    missing = {top for top in imported - debian if not {_dist(d) for d in by_module.get(top, [top])} & installed}
    assert not missing, f"{spec.name} imports {sorted(missing)}, which its deploy does not install"
    assert spec.system_site_packages == bool(debian), f"{spec.name}'s venv sees the host's packages: {debian}"
