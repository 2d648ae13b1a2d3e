"""What a Prometheus scraper makes of a `/metrics` answer: parsed by prometheus_client's own parser and held
to the rules the format and promtool set, so a test fails where a scrape would fail or mislead.

Rules: every family has HELP and TYPE lines, once; a counter is named `*_total`; no series twice; a
histogram's buckets are cumulative in rising `le` and end at `+Inf`, with `_sum` and `_count` (= `+Inf`).
A label value that broke the text (a quote, backslash or newline unescaped) fails the parse or comes
back other than it went in: compare `series(...)` with the values a test put in.
"""

from __future__ import annotations

import math
import re
from collections import Counter, defaultdict

from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families

Labels = frozenset[tuple[str, str]]
_TYPE = re.compile(r"^# TYPE (\S+) (\S+)$", re.M)


def families(text: str) -> dict[str, Metric]:
    """The families of `text` by name, each checked (AssertionError naming the rule it breaks)."""
    declared = Counter(m.group(1) for m in _TYPE.finditer(text))
    assert not [n for n, k in declared.items() if k > 1], f"families declared twice: {declared}"
    for name, kind in _TYPE.findall(text):
        assert kind != "counter" or name.endswith("_total"), f"counter {name} is not named *_total"
    found = {f.name: f for f in text_string_to_metric_families(text)}
    seen: Counter[tuple[str, Labels]] = Counter()
    for f in found.values():
        assert f.type != "unknown", f"{f.name}: no TYPE line"
        assert f.documentation, f"{f.name}: no HELP line"
        seen.update((s.name, frozenset(s.labels.items())) for s in f.samples)
        if f.type == "histogram":
            _histogram(f)
    twice = [k for k, n in seen.items() if n > 1]
    assert not twice, f"series given twice: {twice}"
    return found


def series(text: str) -> dict[tuple[str, Labels], float]:
    """Every sample of `text` (checked as by `families`) by name and labels."""
    return {(s.name, frozenset(s.labels.items())): s.value for f in families(text).values() for s in f.samples}


def value(text: str, name: str, **labels: str) -> float:
    """The value of one series of `text`; AssertionError when there is none."""
    found = series(text).get((name, frozenset(labels.items())))
    assert found is not None, f"no {name}{labels} in\n{text}"
    return found


def _histogram(f: Metric) -> None:
    buckets: defaultdict[Labels, list[tuple[float, float]]] = defaultdict(list)
    other: dict[tuple[str, Labels], float] = {}
    for s in f.samples:
        rest = frozenset((k, v) for k, v in s.labels.items() if k != "le")
        if s.name == f.name + "_bucket":
            buckets[rest].append((float(s.labels["le"]), s.value))
        else:
            other[(s.name[len(f.name):], rest)] = s.value
    for labels, rows in buckets.items():
        bounds, counts = [b for b, _ in rows], [n for _, n in rows]
        assert bounds == sorted(set(bounds)) and bounds[-1] == math.inf, f"{f.name}{dict(labels)}: le {bounds}"
        assert counts == sorted(counts), f"{f.name}{dict(labels)}: buckets not cumulative: {counts}"
        assert ("_sum", labels) in other, f"{f.name}{dict(labels)}: no _sum"
        assert other.get(("_count", labels)) == counts[-1], f"{f.name}{dict(labels)}: _count is not the +Inf bucket"
    assert {labels for _, labels in other} <= set(buckets), f"{f.name}: _sum/_count without buckets"
