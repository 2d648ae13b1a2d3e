"""The operator docs (docs/*.md) against the code: every Prometheus metric, every setting and its default,
every `hs`/`hs-ctl` command line (README.md too), every `/v1/` path.

Operators look up each process's metrics and settings there and copy the command lines, so a change that
forgets the docs fails here naming the metric, key, line or path and the doc file. Pure reading: metric names
and routes from the source with `ast`, settings from their models, command lines through the programs' own
parsers (nothing runs), the markdown with regexes.
"""

from __future__ import annotations

import argparse
import ast
import contextlib
import functools
import io
import json
import re
import shlex
from pathlib import Path

import pytest
from pydantic import BaseModel

from agentkit.tls import TlsSettings
from cephagent.settings import CephAgentSettings
from consoleproxy.settings import ConsoleProxySettings
from coordinator.ctl.settings import CtlSettings
from coordinator.settings import CoordinatorSettings
from deployer.deploy import DeploySettings
from flatnet.eip import EipSettings
from flatnet.metadata.settings import MetadataSettings
from flatnet.settings import FlatnetSettings
from imagestore.settings import ImageStoreSettings
from kvmagent.settings import KvmAgentSettings
from kvmagent.storage.settings import StorageSettings
from kvmagent.vms.settings import VmSettings

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"
PACKAGES = ("agentkit", "flatnet", "kvmagent", "cephagent", "imagestore", "deployer", "coordinator", "consoleproxy")

# --- metrics

METRIC = re.compile(r"hoststack_[a-z0-9_]+")
NOT_METRICS = {"hoststack_ssh": "the deployer's ansible connection plugin (docs/deployer.md)",
               "hoststack_events": "the deployer's ansible callback"}
# the docs of the processes serving what a module (or package) makes (httpmetrics: every HTTP edge's)
METRIC_DOCS = {"agentkit/httpmetrics.py": ("operations.md", "kvmagent.md", "console.md", "storage.md", "ceph.md"),
               "agentkit/edge.py": ("operations.md", "kvmagent.md", "console.md", "storage.md", "ceph.md"),
               "coordinator/": ("operations.md",),
               "kvmagent/": ("kvmagent.md",),
               "cephagent/": ("ceph.md", "operations.md"),
               "flatnet/": ("flatnet.md",),
               "consoleproxy/": ("console.md",),
               "imagestore/": ("storage.md",)}
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


# --- settings

Model = type[BaseModel] | type[CtlSettings]
# where each model's keys are documented: (doc, the heading of the section holding its `| key | default |` table)
SETTINGS: dict[Model, tuple[tuple[str, str], ...]] = {
    KvmAgentSettings: (("kvmagent.md", "## The process: settings and API"),),
    VmSettings: (("kvmagent.md", "## Settings (`VmSettings`"),),
    StorageSettings: (("storage.md", "## Agent settings (`[storage]`"),),
    FlatnetSettings: (("flatnet.md", "## Settings (`[flatnet]`)"),),
    MetadataSettings: (("metadata.md", "## Settings (`MetadataSettings`"),),
    EipSettings: (("eip.md", "## Settings (`[eip]`)"),),
    TlsSettings: (("security.md", "## Settings (`[tls]`"),),
    CoordinatorSettings: (("operations.md", "### The coordinator's settings"),
                          ("ceph.md", "### Settings (coordinator)"),
                          ("deployer.md", "## From the coordinator")),
    CtlSettings: (("operations.md", "### hs-ctl's settings"),),
    CephAgentSettings: (("ceph.md", "## Running it"),),
    ImageStoreSettings: (("storage.md", "## The image store"),),
    ConsoleProxySettings: (("console.md", "### Settings"),),
    DeploySettings: (("deployer.md", "## Settings"),),
}
# Defaults the docs show as what they come to: the model holds None for a value the process works out (or, for
# source_dir, the path of the checkout it was imported from), and the docs say what that is
WORKED_OUT = {
    "CephAgentSettings.keyring": "the keyring ceph.conf names",
    "CephAgentSettings.mon_host": "ceph.conf's mon host",
    "FlatnetSettings.dns_tcp_connections": "a share of the descriptor limit",
    "MetadataSettings.max_connections": "a share of the descriptor limit",
    "TlsSettings.cert": "the PKI layout's file of the process",
    "TlsSettings.key": "the PKI layout's file of the process",
    "TlsSettings.ca": "the PKI layout's ca.pem",
    "DeploySettings.ca": "the PKI layout's ca.pem",
    "DeploySettings.source_dir": "the checkout the deployer runs from",
    "DeploySettings.control_path_dir": "a directory in cache_dir",
}
REQUIRED, COMPUTED = object(), object()  # no default; a default_factory's, made at start-up


def _defaults(model: Model) -> dict[str, object]:
    if issubclass(model, BaseModel):
        return {k: REQUIRED if f.is_required() else COMPUTED if f.default_factory else f.default
                for k, f in model.model_fields.items()}
    return dict.fromkeys(model._fields, REQUIRED) | model._field_defaults


def _renderings(value: object) -> set[str]:
    """How the docs may write a default: `true`, `8741`, `60 s`, `1 MiB`, `100,000`, `["/a"]`, `unset`, …"""
    if value is None:
        return {"unset", "none"}
    if isinstance(value, bool):
        return {str(value).lower()}
    if isinstance(value, int | float):
        forms = {repr(value), f"{value:,}"}
        if float(value).is_integer():
            n = int(value)
            forms |= {str(n), f"{n:,}"} | {f"{n // size} {unit}" for unit, size in
                                          (("KiB", 1 << 10), ("MiB", 1 << 20), ("GiB", 1 << 30)) if n and not n % size}
        return forms | {f"{f} s" for f in forms}
    if isinstance(value, list):
        return {json.dumps(value)} | ({"empty"} if not value else set())
    return {str(value)} if value != "" else {'""', "empty"}


def _section(doc: str, heading: str) -> list[tuple[int, str]]:
    """The numbered lines from `heading` to the next heading (fenced code skipped)."""
    lines, fenced, out = _doc(doc).splitlines(), False, []
    start = next((i for i, line in enumerate(lines) if line.startswith(heading)), None)
    assert start is not None, f"docs/{doc} has no heading {heading!r} (tests/unit/test_docs.py SETTINGS)"
    for n, line in enumerate(lines[start + 1:], start + 2):
        fenced ^= line.startswith("```")
        if line.startswith("#") and not fenced:
            break
        out.append((n, line))
    return out


def _cells(line: str) -> list[str]:
    return [c.strip() for c in re.split(r"(?<!\\)\|", line.strip())[1:-1]]


def _table(doc: str, heading: str) -> list[tuple[int, list[str], list[str]]]:
    """The `| key | default | … |` table of a section: per row its line, keys and the default shown for each."""
    lines = _section(doc, heading)
    starts = [i for i, (_, line) in enumerate(lines) if _cells(line)[:2] == ["key", "default"]]
    assert len(starts) == 1, f"docs/{doc}, {heading!r}: expected one `| key | default | … |` table"
    rows = []
    for n, line in lines[starts[0] + 2:]:
        if not line.startswith("|"):
            break
        key_cell, default_cell = _cells(line)[:2]
        names = re.findall(r"`([^`]+)`", key_cell)
        assert names and key_cell == ", ".join(f"`{k}`" for k in names), \
            f"docs/{doc}:{n}: the key column must be `key` or `key`, `key` … (`[section]` for a section)"
        keys = [k.strip("[]") for k in names]
        shown = default_cell.split(", ") if len(keys) > 1 else [default_cell]
        shown = shown if len(shown) == len(keys) else [default_cell] * len(keys) if len(shown) == 1 else []
        assert shown, f"docs/{doc}:{n}: one default for all the keys, or one per key, comma-separated"
        rows.append((n, keys, shown))
    return rows


def _default_drift(model: Model, key: str, shown: str) -> str | None:
    """What is wrong with the default the docs show for `key`, if anything."""
    default = _defaults(model)[key]
    if isinstance(default, BaseModel) or default is COMPUTED or f"{model.__name__}.{key}" in WORKED_OUT:
        return None  # a [section] (its keys have their table), or described: the hostname, …
    plain = shown.replace("`", "")
    says_required = plain.lstrip("(").startswith("required")
    if default is REQUIRED or says_required:
        return None if default is REQUIRED and says_required else \
            f"shown as {shown!r}, but it is {'required' if default is REQUIRED else repr(default)}"
    forms = _renderings(default)
    return None if plain in forms else f"default shown as {shown!r}, the code's is {default!r} ({sorted(forms)})"


@pytest.mark.parametrize("model", SETTINGS, ids=lambda m: m.__name__)
def test_settings_docs_name_every_key_with_its_default(model: Model):
    defaults, drift, documented = _defaults(model), [], set()
    for doc, heading in SETTINGS[model]:
        for n, keys, shown in _table(doc, heading):
            for key, value in zip(keys, shown, strict=True):
                documented.add(key)
                problem = f"no key of {model.__name__}" if key not in defaults else _default_drift(model, key, value)
                if problem:
                    drift.append(f"docs/{doc}:{n}: `{key}`: {problem}")
    where = " or ".join(f"docs/{doc}" for doc, _ in SETTINGS[model])
    drift += [f"{model.__name__}.{key} is not in {where}" for key, default in defaults.items()
              if key not in documented and not (isinstance(default, BaseModel) and type(default) in SETTINGS)]
    assert not drift, "\n".join(drift)


def test_a_default_drift_is_found():
    assert _default_drift(VmSettings, "stop_timeout", "60 s") is None
    assert _default_drift(VmSettings, "stop_timeout", "`30`") is not None
    assert _default_drift(StorageSettings, "cache_grace", "required") is not None
    assert _default_drift(KvmAgentSettings, "coordinator_url", "`http://x`") is not None


# --- command lines

COMMAND_DOCS = (ROOT / "README.md", *sorted(DOCS.glob("*.md")))
PROGRAMS = ("hs", "hs-ctl")
# what a pipe to one of these hands on is the shell's, not a synopsis' alternatives (`hs host show h | grep x`)
FILTERS = ("grep", "jq", "head", "tail", "less", "sort", "wc")
# values for the placeholders a typed argument takes; any other placeholder (VM, HOST, URL) passes as a name does
SAMPLES = {"N": "5", "S": "60", "COUNT": "3", "SIZE": "10G", "PORT": "5931", "ADDR": "127.0.0.1", "IP": "10.0.0.5",
           "MONPORT": "6789", "CRON": "15 3 * * *", "F": "qcow2", "M": "ISO",
           "uuid": "3b4217a5-0c4e-4b8a-9f1e-3c2d1b0a9e8f"}
PLACEHOLDER = re.compile(r"<([^<>]+)>|\b[A-Z][A-Z0-9_]*\b")


@functools.cache
def _parsers() -> dict[str, argparse.ArgumentParser]:
    """`hs`'s and `hs-ctl`'s own parsers, but for the arguments read at parse time (a password asked on the
    terminal or read from a file), taken as given."""
    from coordinator.cli import parser as hs
    from coordinator.cli.commands import GROUPS, hosts
    from coordinator.ctl import main as ctl

    built = {"hs": hs.build(GROUPS), "hs-ctl": ctl.parser()}
    pending = list(built.values())
    while pending:
        for action in pending.pop()._actions:
            if action.type in (hosts._password, hosts._password_file):
                action.type = str
            if isinstance(action, argparse._SubParsersAction):
                pending += action.choices.values()
    return built


def _commands(path: Path) -> list[tuple[int, str, bool]]:
    """The `hs`/`hs-ctl` command lines of a doc: (line, text, whole). In fenced code, every line whose first word
    (after a `$ ` prompt and VAR=value assignments) is the program, continued over `\\` line ends, up to a ` #`
    comment: whole commands.
    Outside, every code span that starts with `hs ` or `hs-ctl `: it may stop early, naming a command or a flag
    without what they need (`hs vm console --listen`), but what it says must parse."""
    found, fenced, lines = [], False, path.read_text().splitlines()
    prose: list[tuple[int, str]] = []
    for n, line in enumerate(lines, 1):
        if line.lstrip().startswith("```"):
            fenced = not fenced
        elif not fenced:
            prose.append((n, line))
        elif (text := re.sub(r"^\s*(\$\s+)?([A-Z_][A-Z0-9_]*=\S*\s+)*", "", line)).split(" ", 1)[0] in PROGRAMS:
            end = n
            while text.endswith("\\") and end < len(lines):
                text, end = text[:-1] + lines[end].strip(), end + 1
            found.append((n, re.sub(r"\s+#(\s.*)?$", "", text), True))
    text = "\n".join(line for _, line in prose)
    for m in re.finditer(r"`(hs(?:-ctl)? [^`]+)`", text):
        n = prose[text.count("\n", 0, m.start())][0]
        found.append((n, m.group(1).replace("\\|", "|").replace("\n", " "), False))
    return sorted(found)


def _forms(text: str) -> list[str]:
    """A synopsis' command lines: `a | b` (spaced: other verbs of the same program and resource) and `a|b` are
    alternatives; `[…]` is optional, left out and put in (nested ones all at once); `X...`, `X…` stand for X
    once and a lone `…` (more not shown) for nothing. A pipe to a filter ends the command."""
    text = re.split(rf"\s\|\s+(?:{'|'.join(FILTERS)})\b", text)[0].replace("…", " ").replace("...", " ")
    first, *others = re.split(r"\s+\|\s+(?![^\[]*\])", text)
    words = first.split()
    prefix = words[:1] + [w for w in words[1:2] if words[0] == "hs" and not w.startswith("-")]
    forms = []
    for form in [first] + [" ".join(prefix + [other]) for other in others]:
        forms.append(form.replace("[", "").replace("]", ""))
        while (shorter := re.sub(r"\[[^\[\]]*\]", "", form)) != form:
            form = shorter
        forms.append(form)
    out = []
    for form in forms:
        choice = re.search(r"[^\s|]+(?:\|[^\s|]+)+", form)
        out += [form] if choice is None else \
            [f for alt in choice.group().split("|") for f in _forms(form[:choice.start()] + alt + form[choice.end():])]
    return list(dict.fromkeys(out))


def _argv(form: str) -> list[str]:
    """The words of a command line, placeholders given sample values."""
    return _sampled(shlex.split(form))


def _sampled(words: list[str]) -> list[str]:
    return [PLACEHOLDER.sub(lambda m: SAMPLES.get(m.group(1) or m.group(), m.group()), word) for word in words]


def _parse_error(argv: list[str]) -> str | None:
    """What the program's parser says against `argv` (None: it takes it); nothing runs."""
    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            _parsers()[argv[0]].parse_args(argv[1:])
    except SystemExit as e:
        return None if e.code == 0 else err.getvalue().strip().splitlines()[-1]
    return None


def _stops_early(argv: list[str], error: str) -> bool:
    """An inline span names a command or flag without what it needs: a required argument, the last flag's value."""
    return "arguments are required" in error or " is required" in error or \
        ("expected one argument" in error and argv[-1].startswith("-"))


def _refused(text: str, whole: bool) -> list[str]:
    """The forms of a command line (`_forms`) the program's parser refuses, each with its error; `whole`: it may
    not stop early."""
    refused = []
    for form in _forms(text):
        argv = _argv(form)
        if (error := _parse_error(argv)) and (whole or not _stops_early(argv, error)):
            refused.append(f"{shlex.join(argv)}\n    {error}")
    return refused


def test_command_lines_in_the_docs_parse():
    """Every `hs`/`hs-ctl` command line in README.md and docs/*.md (`_commands` says which) parses with the
    program's own parser, in each form its synopsis allows (`_forms`)."""
    failing = [f"{path.relative_to(ROOT)}:{n}: {refused}" for path in COMMAND_DOCS for n, text, whole in _commands(path)
               for refused in _refused(text, whole)]
    assert not failing, f"{len(failing)} command lines do not parse:\n" + "\n".join(failing)


def test_command_lines_are_found_and_checked(tmp_path: Path):
    doc = tmp_path / "doc.md"
    doc.write_text("Run `hs vm console --listen` or `hs vm\nlist --json`, not `hs-ctl`.\n```\nls\n"
                   "HS_URL=x hs vm create web1 \\\n  --l3 flat   # why\n```\n`hs l3 list`\n")
    assert _commands(doc) == [(1, "hs vm console --listen", False), (1, "hs vm list --json", False),
                              (5, "hs vm create web1 --l3 flat", True), (8, "hs l3 list", False)]
    assert [_argv(f) for f in _forms("hs-ctl status | restart [etcd|consoleproxy]")] == [
        ["hs-ctl", "status"], ["hs-ctl", "restart", "etcd"], ["hs-ctl", "restart", "consoleproxy"],
        ["hs-ctl", "restart"]]
    assert [_argv(f) for f in _forms("hs deploy kvmagent|imagestore HOST... | grep ok")] == [
        ["hs", "deploy", "kvmagent", "HOST"], ["hs", "deploy", "imagestore", "HOST"]]
    assert _parse_error(_argv("hs vm console VM --listen [ADDR:]PORT".replace("[", "").replace("]", ""))) is None
    assert _parse_error(_argv("hs --json vm create web1 --l3 flat --tag 'sshkey::ssh-ed25519 <key>'")) is None
    assert "invalid choice: 'lst'" in str(_parse_error(["hs", "vm", "lst"]))
    assert "invalid int value: 'many'" in str(_parse_error(["hs-ctl", "backup", "--keep-amount", "many"]))
    assert _stops_early(["hs", "vm", "console", "--listen"], str(_parse_error(["hs", "vm", "console", "--listen"])))
    assert not _stops_early(["hs", "vm", "list", "--host"], str(_parse_error(["hs", "vm", "list", "--hosts"])))


# --- HTTP routes

ROUTE_CALLS = {"get", "post", "put", "delete", "patch", "route", "add_get", "add_post", "add_put", "add_delete",
               "add_patch", "add_route"}
DOC_ROUTE = re.compile(r"(?:\b(GET|POST|PUT|DELETE|PATCH) +)?(?:https?://[^/\s`]+|<[^>]*>)?"
                       r"(/v1/(?:[\w.\-/]|\{[^}]*\}|<[^>]*>|\[[^\]]*\]|…|\.\.\.)*)")


def _path_text(node: ast.expr, constants: dict[str, str]) -> str | None:
    """A route's path as written: a string, a module's string constant (`PREFIX`), or their sum."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
        left, right = _path_text(node.left, constants), _path_text(node.right, constants)
        return None if left is None or right is None else left + right
    name = node.attr if isinstance(node, ast.Attribute) else node.id if isinstance(node, ast.Name) else None
    return constants.get(name) if name else None


@functools.cache
def _routes() -> frozenset[tuple[str, str]]:
    """Every `/v1/` route our processes serve, as (method, path template): the coordinator's
    declarations (`routes.route("GET", …)`) and the agents' aiohttp ones (`@routes.get(…)`, `router.add_get(…)`,
    `web.get(PREFIX + …)`)."""
    found = set()
    for tree in _sources().values():
        constants = {target.id: node.value.value for node in ast.walk(tree) if isinstance(node, ast.Assign)
                     and isinstance(node.value, ast.Constant) and isinstance(node.value.value, str)
                     for target in node.targets if isinstance(target, ast.Name)}
        for node in ast.walk(tree):
            if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                    and node.func.attr in ROUTE_CALLS and node.args):
                continue
            verb = node.func.attr.removeprefix("add_")
            method, where = (_path_text(node.args[0], constants), node.args[1:2]) if verb == "route" \
                else (verb.upper(), node.args[:1])
            path = _path_text(where[0], constants) if where else None
            if method and path and path.startswith("/v1/"):
                found.add((method, path))
    return frozenset(found)


def _route_forms(path: str) -> list[str]:
    """A doc's path with its `[optional]` part left out and put in, once per word of a `{a,b}`, its query cut
    off."""
    forms = [re.sub(r"\[[^\]]*\]", "", path), path.replace("[", "").replace("]", "")]
    if choice := re.search(r"\{([^}]*,[^}]*)\}", path):
        forms = [f for word in choice.group(1).split(",")
                 for f in _route_forms(path[:choice.start()] + word + path[choice.end():])]
    return list(dict.fromkeys(re.split(r"[?&]", form)[0] for form in forms))


def _segment(segment: str) -> re.Pattern[str]:
    """A doc's path segment: `{x}`, `<x>` stand for any value."""
    return re.compile("".join("[^/]+" if part.startswith(("{", "<")) else re.escape(part)
                              for part in re.split(r"(\{[^}]*\}|<[^>]*>)", segment)))


def _serves(method: str | None, path: str) -> bool:
    """Whether a route (of `method`, if given) serves a doc's `path`; a last segment `…` or `...` stands for
    any rest."""
    *segments, last = path.split("/")
    rest = last in ("…", "...")
    wanted = [_segment(s) for s in segments + ([] if rest else [last.rstrip(".")])]
    for m, route in _routes():
        have = route.split("/")
        if (method in (None, m) and (len(have) > len(wanted) if rest else len(have) == len(wanted))
                and all(h.startswith("{") or w.fullmatch(h) for w, h in zip(wanted, have, strict=False))):
            return True
    return False


def test_routes_are_found_in_the_code():
    """The scan finds every route the coordinator's OpenAPI document has, and the agents' (the image store's
    download, the kvmagent's console tunnel)."""
    from coordinator.app import spec

    declared = {(m.upper(), p) for p, ops in spec()["paths"].items() for m in ops if p.startswith("/v1/")}
    assert declared <= _routes()
    assert {("GET", "/v1/images/{image_id}/data"), ("GET", "/v1/consoles/{vm}/{kind}")} <= _routes()
    assert _serves("PUT", "/v1/global-configs/kvm/vm.cacheMode") and _serves(None, "/v1/hosts/{uuid}/…")
    assert _route_forms("/v1/ceph-{backup,primary}-storage[/{uuid}]?live=false") == [
        "/v1/ceph-backup-storage", "/v1/ceph-backup-storage/{uuid}", "/v1/ceph-primary-storage",
        "/v1/ceph-primary-storage/{uuid}"]
    assert not _serves("PUT", "/v1/vms/{uuid}") and not _serves("GET", "/v1/vms/{uuid}/nic")


def test_http_paths_in_the_docs_are_routes():
    """Every `/v1/…` path README.md and docs/*.md name (with the method before it, if one is) is served by one of
    our processes: the coordinator or an agent."""
    unknown = []
    for path in COMMAND_DOCS:
        for n, line in enumerate(path.read_text().splitlines(), 1):
            for m in DOC_ROUTE.finditer(line):
                if not all(_serves(m.group(1), form) for form in _route_forms(m.group(2))):
                    unknown.append(f"{path.relative_to(ROOT)}:{n}: {m.group(0)}")
    assert not unknown, "paths no route serves:\n" + "\n".join(unknown)
