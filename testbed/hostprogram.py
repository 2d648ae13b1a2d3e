"""The program a deploy runs on a host (deployer.tasks.program), for tests that run it on this machine: its step
lock moved out of /run/hoststack (root's, and the machine's, not a test's) to a path of the test's."""

from __future__ import annotations

from pathlib import Path
from types import ModuleType

from deployer.remote import host
from deployer.tasks import program as shipped  # bound at import: a unit test replaces tasks.program with ours


def program(*modules: ModuleType, step_lock: Path) -> str:
    """`tasks.program(*modules)` taking its step lock at `step_lock`; AssertionError when the shipped program no
    longer names `host.STEP_LOCK` as this expects (a test would write the machine's path again)."""
    text, line = shipped(*modules), f'STEP_LOCK = Path("{host.STEP_LOCK}")'
    assert host not in modules or text.count(line) == 1, f"{line} is no longer in the shipped program"
    return text.replace(line, f'STEP_LOCK = Path("{step_lock}")')
