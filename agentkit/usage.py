"""Command lines whose usage errors read as their other errors do: one line naming the argument, exit 1
(argparse prints its usage text and exits 2). `hs` and `hs-ctl` parse with it."""

from __future__ import annotations

import argparse
from typing import NoReturn


class Parser(argparse.ArgumentParser):
    """Usage errors are one line and exit 1, like every other error of the command."""

    def error(self, message: str) -> NoReturn:
        self.exit(1, f"{self.prog}: {message} (see {self.prog} --help)\n")
