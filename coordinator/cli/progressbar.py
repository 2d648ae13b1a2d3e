"""A one-line terminal progress bar for long operations the CLI follows (image imports)."""

from __future__ import annotations

from typing import TextIO

MiB = 1 << 20


class ProgressBar:
    """Redraws one line with `\\r`; `finish` ends it with a newline. Unknown totals show bytes instead."""

    def __init__(self, out: TextIO, label: str, width: int = 30):
        self.out, self.label, self.width = out, label, width
        self._last = ""

    def line(self, percent: float | None, phase: str | None, done: int | None = None) -> str:
        if percent is None:
            bar = "?" * self.width
            amount = f"{(done or 0) / MiB:8.1f} MiB"
        else:
            filled = round(self.width * min(max(percent, 0.0), 100.0) / 100)
            bar = "#" * filled + "." * (self.width - filled)
            amount = f"{percent:6.1f}%"
        return f"{self.label} [{bar}] {amount} {phase or ''}".rstrip()

    def update(self, percent: float | None, phase: str | None, done: int | None = None) -> None:
        text = self.line(percent, phase, done)
        if text != self._last:
            self.out.write("\r" + text.ljust(len(self._last)))
            self.out.flush()
            self._last = text

    def finish(self, percent: float | None, phase: str | None, done: int | None = None) -> None:
        self.update(percent, phase, done)
        self.out.write("\n")
        self.out.flush()
