"""The `hs`/`hs-ctl` command lines the code's texts quote (errors, help, log lines, docstrings) against the
programs' own parsers, as tests/unit/test_docs.py checks those of the docs (with its machinery): a verb or flag
renamed leaves no text telling operators to run what is not there.
"""

from __future__ import annotations

import argparse
import ast
import re

from tests.unit.test_docs import PLACEHOLDER, _parse_error, _parsers, _refused, _sampled, _sources, _stops_early

# a value put into a text (a `%s`, a template's `{field}`; an f-string's), standing for a name
INTERPOLATED = re.compile(r"%[sdr]|\{[^{}]*\}")
# quoted: `hs …` between backticks, or between quotes of one kind
QUOTED = re.compile(r"`((?:hs|hs-ctl) [^`]+)`|(['\"])((?:hs|hs-ctl) (?:(?!\2).)+)\2")
# unquoted: the program as a word (not a path's end: .venv/bin/hs) up to the end of its clause: a `)`, `;`, `,`, or
# a `.` or `:` before a space or the text's end (`...` goes on)
UNQUOTED = re.compile(r"(?<![\w/.-])(?:hs|hs-ctl) (?:\.\.\.|[^);,.:]|[.:](?=\S))+")
PROSE = re.compile(r"[a-z][a-z']*")  # a word a sentence goes on with after a command (`hs host add` reads them)


def _texts(tree: ast.Module) -> list[tuple[int, str]]:
    """Every string of a module by line: constants (docstrings too) and f-strings (a value as `<value>`)."""
    parts = {id(v) for node in ast.walk(tree) if isinstance(node, ast.JoinedStr) for v in ast.walk(node)
             if v is not node}
    texts = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in parts:
            texts.append((node.lineno, INTERPOLATED.sub("<value>", node.value)))
        elif isinstance(node, ast.JoinedStr) and id(node) not in parts:
            texts.append((node.lineno, "".join(INTERPOLATED.sub("<value>", v.value) if isinstance(v, ast.Constant)
                                               else "<value>" for v in node.values)))
    return sorted(texts)


def _subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    return next((a.choices for a in parser._actions if isinstance(a, argparse._SubParsersAction)), {})


def _command_words(argv: list[str]) -> int | None:
    """How many words of `argv` name the program and its subcommands down to one that has none (`hs vm start`:
    3); None when they name no such command."""
    parser, n = _parsers()[argv[0]], 1
    while subcommands := _subcommands(parser):
        if n == len(argv) or argv[n] not in subcommands:
            return None
        parser, n = subcommands[argv[n]], n + 1
    return n


def _schematic(words: list[str]) -> bool:
    """`hs RESOURCE VERB …`, `hs deploy <agent> HOST`: a placeholder where a subcommand goes stands for them all."""
    parser = _parsers()[words[0]]
    for word in words[1:]:
        if word not in (subcommands := _subcommands(parser)):
            return bool(subcommands) and PLACEHOLDER.fullmatch(word) is not None
        parser = subcommands[word]
    return False


def _takes(argv: list[str]) -> bool:
    error = _parse_error(argv)
    return error is None or _stops_early(argv, error)


def _quoted_commands(text: str) -> list[tuple[str, bool]]:
    """The `hs`/`hs-ctl` command lines a text of the code quotes: (command, quoted). Quoted, between backticks or
    quotes: the whole span, as the docs' inline code spans. Unquoted, the program and one of its subcommands (so
    `hs-ctl reads its settings` is prose) and on to where prose goes on: the longest head of its clause, past its
    subcommands, that the parser takes and a plain word follows (`hs host deploy-log HOST shows a host's deploy`);
    the whole clause where no head is (which is then refused). Left out: a synopsis of several (`_schematic`)."""
    text = re.sub(r"\s+", " ", text)
    found = [(m.group(1) or m.group(3), True) for m in QUOTED.finditer(text)]
    for m in UNQUOTED.finditer(QUOTED.sub(lambda q: " " * len(q.group()), text)):
        words = m.group().replace("…", " ").replace("...", " ").split()  # `X...`: X once, as `_forms` reads it
        if words[1] not in _subcommands(_parsers()[words[0]]):
            continue
        argv = _sampled(words)
        least = _command_words(argv) or len(words)
        end = next((end for end in range(len(words), least - 1, -1)
                    if (end == len(words) or PROSE.fullmatch(words[end])) and _takes(argv[:end])), len(words))
        found.append((" ".join(words[:end]), False))
    return [(command, quoted) for command, quoted in found if not _schematic(command.split())]


def test_command_lines_the_code_quotes_parse():
    """Every `hs`/`hs-ctl` command line an error, a help text, a log line or a docstring of our packages quotes
    (test_docs.PACKAGES; `_quoted_commands` says which lines) parses with the program's own parser, as the docs'
    do."""
    failing = [f"{module}:{n}: {refused}" for module, tree in _sources().items() for n, text in _texts(tree)
               for command, _ in _quoted_commands(text) for refused in _refused(command, False)]
    assert not failing, f"{len(failing)} command lines in the code do not parse:\n" + "\n".join(failing)


CODE_SAMPLE = '''
def f(vm):
    """hs-ctl reads its settings; hs-ctl backup, as .venv/bin/hs vm list does."""
    raise Error(f"run `hs vm cancel-migration {vm.name}` first, or 'hs vm list --json'")
msg_fmt = "no proxy (hs console-proxy list); hs host deploy-log %s shows it: or run hs deploy"
'''


def test_command_lines_the_code_quotes_are_found_and_checked():
    assert [(n, found) for n, text in _texts(ast.parse(CODE_SAMPLE)) for found in _quoted_commands(text)] == [
        (3, ("hs-ctl backup", False)), (4, ("hs vm cancel-migration <value>", True)), (4, ("hs vm list --json", True)),
        (5, ("hs console-proxy list", False)), (5, ("hs host deploy-log <value>", False)), (5, ("hs deploy", False))]
    # a verb or flag that is not there is never cut off as prose
    assert _quoted_commands("run hs host deploylog HOST shows it") == [("hs host deploylog HOST shows it", False)]
    assert _quoted_commands("(hs deploy ssh NAME --keyfile ... shows it)") == [
        ("hs deploy ssh NAME --keyfile shows it", False)]
    assert _refused("hs host deploylog HOST shows it", False) and _refused("hs deploy ssh N --keyfile shows it", False)
    assert not _refused("hs deploy", False)
    assert _quoted_commands("`hs RESOURCE VERB …`, `hs deploy <agent> HOST...`, `hs deploy kvmagent HOST`") == [
        ("hs deploy kvmagent HOST", True)]
