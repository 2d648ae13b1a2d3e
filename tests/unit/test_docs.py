"""The operator docs (docs/*.md) against the code: every Prometheus metric.

Operators look up each process's metrics there, so a change that forgets the docs fails here naming the
metric and the doc file. Pure reading: metric names from the source with `ast`, the markdown with regexes.
"""

from __future__ import annotations

import ast
import functools
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"
PACKAGES = ("agentkit", "flatnet", "kvmagent", "cephagent", "imagestore", "deployer", "coordinator", "consoleproxy")

# --- metrics

METRIC = re.compile(r"hoststack_[a-z0-9_]+")
NOT_METRICS = {"hoststack_ssh": "the deployer's ansible connection plugin (docs/deployer.md)",
               "hoststack_events": "the deployer's ansible callback"}
# the docs of the processes serving what a module (or package) makes
METRIC_DOCS = {"agentkit/httpmetrics.py": ("operations.md", "kvmagent.md", "console.md"),  # every HTTP edge's
               "coordinator/": ("operations.md",),
               "kvmagent/": ("kvmagent.md",),
               "flatnet/": ("flatnet.md",),
               "consoleproxy/": ("console.md",)}
HISTOGRAM_SERIES = ("_bucket", "_sum", "_count")


@functools.cache
def _sources() -> dict[str, ast.Module]:
    return {path.relative_to(ROOT).as_posix(): ast.parse(path.read_text(), str(path))
            for package in PACKAGES for path in sorted((ROOT / package).rglob("*.py"))}


def _histograms(tree: ast.Module) -> set[str]:
    return {node.args[0].value for node in ast.walk(tree)
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "histogram"
            and node.args and isinstance(node.args[0], ast.Constant)}


@functools.cache
def _exported() -> dict[str, tuple[str, bool]]:
    """Every metric name the code makes: the module making it, and whether it is a histogram's."""
    found: dict[str, tuple[str, bool]] = {}
    for module, tree in _sources().items():
        histograms = _histograms(tree)
        for node in ast.walk(tree):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and METRIC.fullmatch(node.value) \
                    and node.value not in NOT_METRICS:
                found[node.value] = (module, node.value in histograms)
    return found


@functools.cache
def _doc(name: str) -> str:
    return (DOCS / name).read_text()


def test_metric_names_are_spelled_out_whole():
    """A name put together at run time would escape the tests below (and an operator's grep)."""
    built = [f"{module}:{node.lineno}" for module, tree in _sources().items() for node in ast.walk(tree)
             if isinstance(node, ast.JoinedStr) and node.values and isinstance(node.values[0], ast.Constant)
             and str(node.values[0].value).startswith("hoststack_")]
    assert not built, f"metric names built from parts at {built}: spell each out as one string"


def test_the_code_exports_metrics():
    assert {"hoststack_http_requests_total", "hoststack_leader", "hoststack_link_connected",
            "hoststack_flatnet_lease_reports_total", "hoststack_console_sessions_open"} <= set(_exported())


def test_every_metric_is_documented_with_its_process():
    missing = []
    for name, (module, _) in sorted(_exported().items()):
        docs = [d for prefix, docs in METRIC_DOCS.items() if module.startswith(prefix) for d in docs]
        if not docs:
            missing.append(f"{name} ({module}): add where its process's metrics are documented to METRIC_DOCS")
        missing += [f"{name} ({module}) is not named in docs/{d}" for d in docs if name not in METRIC.findall(_doc(d))]
    assert not missing, "\n".join(missing)


def _is_exported(name: str) -> bool:
    exported = _exported()
    if name.endswith("*"):
        return any(m.startswith(name[:-1]) for m in exported)
    return name in exported or name in NOT_METRICS or any(
        name.endswith(s) and exported.get(name.removesuffix(s), ("", False))[1] for s in HISTOGRAM_SERIES)


def test_a_histogram_has_its_series_and_a_wildcard_needs_a_metric():
    assert _is_exported("hoststack_http_request_seconds_count") and not _is_exported("hoststack_leader_count")
    assert _is_exported("hoststack_flatnet_*") and not _is_exported("hoststack_flatnets_*")


def test_every_metric_the_docs_name_exists():
    unknown = [f"docs/{doc.name}:{n}: {name} is no metric the code exports"
               for doc in sorted(DOCS.glob("*.md")) for n, line in enumerate(_doc(doc.name).splitlines(), 1)
               for name in re.findall(r"hoststack_[a-z0-9_]+\*?", line) if not _is_exported(name)]
    assert not unknown, "\n".join(unknown)

