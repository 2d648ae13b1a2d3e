"""`hs` as a new user meets it: help for every resource and verb, one-line usage errors, and every
argument that names an object taking a uuid or a name."""

from __future__ import annotations

import io
import re
import sys

import pytest

from coordinator.cli import parser
from coordinator.cli.commands import GROUPS, hosts
from coordinator.cli.declare import Call, placeholders

# Path placeholders that are not objects with a name: a volume or NIC of one VM, a tag (it has only a
# uuid), a service, a snapshot, a global config's category and name.
UNNAMED = {"volume", "tag_uuid", "service", "snapshot", "category", "name"}


def _help(capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    with pytest.raises(SystemExit) as e:
        parser.build(GROUPS).parse_args([*argv, "--help"])
    assert e.value.code == 0
    return capsys.readouterr().out


def _entries(text: str) -> dict[str, str]:
    """`name  help` lines of an argparse subcommand listing (the help may start on the next line)."""
    lines, out = text.splitlines(), {}
    for i, line in enumerate(lines):
        parts = line.split(None, 1)
        if line.startswith("    ") and not line.startswith("      ") and parts:
            out[parts[0]] = parts[1] if len(parts) > 1 else lines[i + 1].strip()
    return out


def test_hs_help_lists_every_resource_with_a_line(capsys):
    listed = _entries(_help(capsys))
    assert list(listed) == [g.name for g in GROUPS]
    for g in GROUPS:
        assert g.help.startswith(listed[g.name].split("  ")[0][:30]), g.name


def test_each_resource_help_lists_its_verbs(capsys):
    for g in GROUPS:
        listed = _entries(_help(capsys, g.name))
        assert list(listed) == [c.verb for c in g.commands], g.name
        assert all(listed.values()), f"{g.name}: a verb without help"


def test_usage_errors_are_one_line_and_exit_1(capsys):
    for argv in ([], ["vm"], ["vm", "show"], ["vm", "cdrom", "tiny"], ["l3", "create", "x", "--l2", "a",
                                                                      "--cidr", "c", "--range", "1"]):
        with pytest.raises(SystemExit) as e:
            parser.build(GROUPS).parse_args(argv)
        err = capsys.readouterr().err
        assert e.value.code == 1 and len(err.strip().splitlines()) == 1, err
    assert "the following arguments are required: VM" in parser_error(capsys, "vm", "show")
    assert "one of the arguments ISO --eject is required" in parser_error(capsys, "vm", "cdrom", "tiny")
    assert "argument --range: '1': expected START-END" in parser_error(
        capsys, "l3", "create", "x", "--l2", "a", "--cidr", "c", "--range", "1")


def test_an_ssh_password_need_not_be_on_the_command_line(tmp_path, monkeypatch, capsys):
    """From a file, the environment or the terminal: none shows in the process list or the shell's history."""
    (tmp_path / "pw").write_text("s3cret\n")
    monkeypatch.delenv("HS_SSH_PASSWORD", raising=False)

    def password(*argv: str) -> str | None:
        return parser.build(GROUPS).parse_args(["deploy", "ssh", "kvm1", *argv]).password

    assert password("--password-file", str(tmp_path / "pw")) == "s3cret" and password() is None
    monkeypatch.setenv("HS_SSH_PASSWORD", "from-env")
    assert password() == "from-env" and password("--password-file", str(tmp_path / "pw")) == "s3cret"
    assert parser.build(GROUPS).parse_args(["host", "add", "kvm1", "198.18.0.2"]).password == "from-env"
    monkeypatch.delenv("HS_SSH_PASSWORD")
    monkeypatch.setattr(sys, "stdin", type("Terminal", (), {"isatty": lambda self: True})())
    monkeypatch.setattr(hosts.getpass, "getpass", lambda prompt: "typed")
    assert password("--password", "-") == "typed"
    monkeypatch.setattr(sys, "stdin", io.StringIO())  # no terminal to ask on
    assert "argument --password: '-' asks for the password on a terminal, and there is none" in parser_error(
        capsys, "deploy", "ssh", "kvm1", "--password", "-")
    assert f"argument --password-file: cannot read {tmp_path}/none: No such file or directory" in parser_error(
        capsys, "deploy", "ssh", "kvm1", "--password-file", str(tmp_path / "none"))
    assert "argument --password-file: not allowed with argument --password" in parser_error(
        capsys, "deploy", "kvmagent", "kvm1", "--password", "x", "--password-file", str(tmp_path / "pw"))


def parser_error(capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    with pytest.raises(SystemExit):
        parser.build(GROUPS).parse_args(argv)
    return capsys.readouterr().err


def test_every_command_has_help_that_says_which_arguments_take_a_name(capsys):
    for g in GROUPS:
        for c in g.commands:
            text = " ".join(_help(capsys, g.name, c.verb).split())
            assert c.help in text
            assert text.count("uuid or name") == len([a for a in c.args if a.ref is not None]), text


def test_every_verb_says_what_it_does_in_words_not_by_the_seed_api_s_action_name():
    seed = re.compile(r"\b(Add|Create|Update|Delete|Query|Get|Remove)[A-Z][A-Za-z]*")
    named = [f"hs {g.name} {c.verb}: {c.help}" for g in GROUPS for c in g.commands if seed.search(c.help)]
    assert not named


def test_every_object_in_a_path_is_taken_by_uuid_or_name():
    for g in GROUPS:
        for c in g.commands:
            if isinstance(c.action, Call):
                refs = {a.dest for a in c.args if a.ref is not None}
                named = {p for path in c.action.paths for p in placeholders(path)} - UNNAMED
                assert named <= refs, f"hs {g.name} {c.verb}: {named - refs} take only a uuid"


def test_placeholders_are_arguments():
    for g in GROUPS:
        for c in g.commands:
            if isinstance(c.action, Call):
                dests = {a.dest for a in c.args}
                for path in c.action.paths:
                    assert set(placeholders(path)) <= dests, f"hs {g.name} {c.verb}: {path}"


def test_a_stopped_vm_and_repeated_flags_parse_as_the_body_wants():
    a = parser.build(GROUPS).parse_args(["vm", "create", "web", "--l3", "a", "--l3", "b", "--ip", "a=10.0.0.5",
                                         "--stopped", "--wait", "5"])
    assert (a.state, a.l3, a.fixed_ips, a.wait) == ("Stopped", ["a", "b"], [("a", "10.0.0.5")], 5.0)
    assert parser.build(GROUPS).parse_args(["vm", "create", "web"]).state == "Running"


def test_a_wait_is_a_finite_number_of_seconds(capsys):
    """`--wait inf` was sent on and ended in a traceback (a request timeout of inf + 60 s)."""
    for text in ("inf", "nan", "-1", "soon"):
        assert f"argument --wait: '{text}': expected a number of seconds, 0 or more" in parser_error(
            capsys, "vm", "start", "web", "--wait", text)
    assert "expected a number of seconds" in parser_error(capsys, "ceph", "add-mon", "bs", "--mon-url", "m",
                                                          "--wait", "inf")
    assert parser.build(GROUPS).parse_args(["vm", "start", "web", "--wait", "0"]).wait == 0.0


def test_every_size_takes_binary_units():
    """`--size 10G` wherever a size is asked for, as `hs vm create --data-disk 10G` and `hs volume create` take it."""
    def size(*argv: str) -> int:
        return int(parser.build(GROUPS).parse_args(argv).size)

    assert size("vm", "attach-volume", "web", "/data/d.qcow2", "--size", "10G") == 10 << 30
    assert size("vm", "attach-volume", "web", "/data/d.qcow2") == 1 << 30
    assert size("volume", "create", "d", "--primary-storage", "ps", "--size", "512M") == 512 << 20


def test_memory_is_mib_or_a_size_with_a_unit(capsys):
    """`--memory 2G` as `--size 2G` (the same suffixes); a plain number stays MiB, as it always was."""
    def memory(text: str) -> int:
        return int(parser.build(GROUPS).parse_args(["vm", "create", "web", "--memory", text]).memory)

    assert (memory("512"), memory("2G"), memory("2GiB"), memory("1536M"), memory("1048576K")) == (
        512, 2048, 2048, 1536, 1024)
    assert parser.build(GROUPS).parse_args(["vm", "create", "web"]).memory == 256
    assert parser.build(GROUPS).parse_args(["vm", "create-batch", "web", "2", "--memory", "1G"]).memory == 1024
    for text in ("2X", "1.5G", "-1", "512K", "G"):
        assert f"argument --memory: '{text}': expected MiB (a number) or a whole number of MiB" in parser_error(
            capsys, "vm", "create", "web", "--memory", text)


def test_a_resource_s_own_object_comes_first_in_each_of_its_verbs():
    """`hs eip attach EIP VM`, `hs volume attach VOLUME VM`: the object the resource is about leads, then
    what the verb relates it to, in every resource alike."""
    checked = 0
    for g in GROUPS:
        show = next((c for c in g.commands if c.verb == "show"), None)
        if show is None:
            continue
        own = next(a for a in show.args if not a.names[0].startswith("-")).label
        for c in g.commands:
            positionals = [a.label for a in c.args if not a.names[0].startswith("-")]
            if own in positionals:
                assert positionals.index(own) == 0, f"hs {g.name} {c.verb}: {' '.join(positionals)}"
                checked += 1
    assert checked > 20


def test_a_console_is_the_screen_unless_the_serial_port_is_asked_for(capsys):
    """`hs vm console VM` as README shows it: no flag needed for the screen."""
    assert parser.build(GROUPS).parse_args(["vm", "console", "tiny"]).kind is None
    assert parser.build(GROUPS).parse_args(["vm", "console", "tiny", "--browser"]).kind is None
    assert parser.build(GROUPS).parse_args(["vm", "console", "tiny", "--serial"]).kind == "serial"
    assert "argument --serial: not allowed with argument --browser" in parser_error(
        capsys, "vm", "console", "tiny", "--browser", "--serial")


def test_json_may_follow_the_command_as_well_as_lead_it():
    """`hs vm list --json`: added to a command line just run, as every verb's help lists it."""
    def as_json(*argv: str) -> bool:
        return bool(parser.build(GROUPS).parse_args(argv).json)

    assert as_json("vm", "list", "--json") and as_json("--json", "vm", "list") and not as_json("vm", "list")
    assert as_json("host", "show", "kvm1", "--json") and as_json("pki", "init", "--json")


def test_no_two_arguments_of_a_command_print_alike():
    """`hs tag update TAG TEXT`: usage and errors name each argument apart."""
    for g in GROUPS:
        for c in g.commands:
            labels = [a.label for a in c.args]
            assert len(set(labels)) == len(labels), f"hs {g.name} {c.verb}: {' '.join(labels)}"


def test_pki_takes_only_a_lifetime_a_name_and_hosts_it_can_make_a_certificate_of(capsys):
    """Each refused in one usage line before anything is written: a lifetime that ends before it starts (it was
    a traceback), a name that is a path out of --dir, a host that is no address."""
    for argv, words in ((["init", "--days", "0"], "argument --days: '0': expected a number of days above 0"),
                        (["issue", "x", "--host", "10.0.0.1", "--days", "-1"], "argument --days: '-1': expected"),
                        (["issue", "../evil", "--host", "10.0.0.1"], "argument NAME: '../evil': expected a process "
                                                                      "name"),
                        (["issue", "x", "--host", "bad host!"], "argument --host: 'bad host!' is neither an IP "
                                                                 "address nor a DNS name")):
        assert words in parser_error(capsys, "pki", *argv)
    a = parser.build(GROUPS).parse_args(["pki", "issue", "coordinator", "--host", "10.0.0.1", "--host", "hs.example",
                                         "--days", "30"])
    assert (a.name, a.host, a.days) == ("coordinator", ["10.0.0.1", "hs.example"], 30.0)
