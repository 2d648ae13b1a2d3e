"""Prometheus metrics in text exposition format 0.0.4: counters, histograms, and gauges and counts kept elsewhere
read at scrape time.

Small on purpose (no client library on hosts): a `Registry` holds metrics in the order they were made
and renders them; labels are given as values in the order the metric declared their names. What keeps
its own counts renders them with `family` when scraped.
"""

from __future__ import annotations

import bisect
import collections
import itertools
import math
from collections.abc import Callable, Iterable

LabelValues = tuple[str, ...]
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"  # what a /metrics answer is
# seconds, from a loopback etcd read to a slow transaction under load
BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


def _labels(names: tuple[str, ...], values: LabelValues, extra: str = "") -> str:
    pairs = [f'{n}="{_escape(v)}"' for n, v in zip(names, values, strict=True)]
    if extra:
        pairs.append(extra)
    return "{" + ",".join(pairs) + "}" if pairs else ""


def _escape(v: str) -> str:
    return v.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _num(v: float) -> str:
    if math.isinf(v):
        return "+Inf" if v > 0 else "-Inf"
    return repr(float(v)) if not float(v).is_integer() else str(int(v))


def family(name: str, help: str, kind: str, labels: tuple[str, ...],
           samples: Iterable[tuple[LabelValues, float]]) -> list[str]:
    """One counter or gauge as text: its HELP and TYPE lines, then a line per sample (label values escaped)."""
    return [f"# HELP {name} {help}", f"# TYPE {name} {kind}",
            *(f"{name}{_labels(labels, k)} {_num(v)}" for k, v in samples)]


def every(counts: collections.Counter[LabelValues], *labels: tuple[str, ...]) -> list[tuple[LabelValues, float]]:
    """The count of every combination of the `labels`' values, zeros too (so that a rate has a beginning), then
    any other `counts` holds."""
    known = list(itertools.product(*labels))
    return [(key, counts[key]) for key in known + sorted(counts.keys() - set(known))]


class Counter:
    def __init__(self, name: str, help: str, labels: tuple[str, ...] = ()):
        self.name, self.help, self.labels = name, help, labels
        self.values: dict[LabelValues, float] = {}

    def inc(self, *values: str, amount: float = 1.0) -> None:
        self.values[values] = self.values.get(values, 0.0) + amount

    def render(self) -> list[str]:
        return family(self.name, self.help, "counter", self.labels, sorted(self.values.items()))


class Histogram:
    def __init__(self, name: str, help: str, labels: tuple[str, ...] = (), buckets: tuple[float, ...] = BUCKETS):
        self.name, self.help, self.labels, self.buckets = name, help, labels, buckets
        self.counts: dict[LabelValues, list[int]] = {}  # per bucket (not cumulative), then +Inf
        self.sums: dict[LabelValues, float] = {}

    def observe(self, value: float, *values: str) -> None:
        counts = self.counts.setdefault(values, [0] * (len(self.buckets) + 1))
        counts[bisect.bisect_left(self.buckets, value)] += 1
        self.sums[values] = self.sums.get(values, 0.0) + value

    def render(self) -> list[str]:
        out = [f"# HELP {self.name} {self.help}", f"# TYPE {self.name} histogram"]
        for key, counts in sorted(self.counts.items()):
            total = 0
            for bound, n in zip((*self.buckets, math.inf), counts, strict=True):
                total += n
                le = 'le="' + _num(bound) + '"'
                out.append(f"{self.name}_bucket{_labels(self.labels, key, le)} {total}")
            out.append(f"{self.name}_sum{_labels(self.labels, key)} {_num(self.sums[key])}")
            out.append(f"{self.name}_count{_labels(self.labels, key)} {total}")
        return out


class Gauge:
    """Read when scraped: `read()` gives (label values, value) pairs."""

    kind = "gauge"

    def __init__(self, name: str, help: str, labels: tuple[str, ...],
                 read: Callable[[], Iterable[tuple[LabelValues, float]]]):
        self.name, self.help, self.labels, self.read = name, help, labels, read

    def render(self) -> list[str]:
        return family(self.name, self.help, self.kind, self.labels, self.read())


class Count(Gauge):
    """A count kept elsewhere that only grows while the process lives, read when scraped: a counter."""

    kind = "counter"


Metric = Counter | Histogram | Gauge


class Registry:
    def __init__(self) -> None:
        self.metrics: list[Metric] = []

    def counter(self, name: str, help: str, labels: tuple[str, ...] = ()) -> Counter:
        c = Counter(name, help, labels)
        self.metrics.append(c)
        return c

    def histogram(self, name: str, help: str, labels: tuple[str, ...] = ()) -> Histogram:
        h = Histogram(name, help, labels)
        self.metrics.append(h)
        return h

    def gauge(self, name: str, help: str, read: Callable[[], Iterable[tuple[LabelValues, float]]],
              labels: tuple[str, ...] = ()) -> Gauge:
        g = Gauge(name, help, labels, read)
        self.metrics.append(g)
        return g

    def count(self, name: str, help: str, read: Callable[[], Iterable[tuple[LabelValues, float]]],
              labels: tuple[str, ...] = ()) -> Count:
        c = Count(name, help, labels, read)
        self.metrics.append(c)
        return c

    def render(self) -> str:
        return "\n".join(line for m in self.metrics for line in m.render()) + "\n"
