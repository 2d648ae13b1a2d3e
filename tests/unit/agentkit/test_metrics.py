"""Prometheus text format: counters, cumulative histogram buckets, gauges read at scrape time, escaping."""

from __future__ import annotations

from agentkit.metrics import Registry
from testbed import promtext


def test_exposition_format():
    r = Registry()
    c = r.counter("hs_requests_total", "requests", ("route", "code"))
    c.inc("/v1/vms/{uuid}", "200")
    c.inc("/v1/vms/{uuid}", "200")
    c.inc('/a"b', "500")
    h = r.histogram("hs_seconds", "latency", ("op",))
    for v in (0.0004, 0.001, 0.3, 99.0):
        h.observe(v, "get")
    r.gauge("hs_leader", "leads", lambda: [((), 1.0)])
    text = r.render()
    assert 'hs_requests_total{route="/v1/vms/{uuid}",code="200"} 2\n' in text
    assert 'hs_requests_total{route="/a\\"b",code="500"} 1\n' in text
    assert 'hs_seconds_bucket{op="get",le="0.0005"} 1\n' in text
    assert 'hs_seconds_bucket{op="get",le="0.001"} 2\n' in text  # le: at most, cumulative
    assert 'hs_seconds_bucket{op="get",le="0.5"} 3\n' in text and 'hs_seconds_bucket{op="get",le="+Inf"} 4\n' in text
    assert 'hs_seconds_count{op="get"} 4\n' in text and 'hs_seconds_sum{op="get"} 99.3014\n' in text
    assert "# TYPE hs_leader gauge\nhs_leader 1\n" in text
    assert text.index("# TYPE hs_requests_total counter") < text.index("# TYPE hs_seconds histogram")


def test_a_scraper_reads_back_every_label_value_and_histogram():
    r = Registry()
    odd = ['vm "web"', "C:\\path", "two\nlines", "\\n", ""]
    c = r.counter("hs_refused_total", "refused", ("what",))
    h = r.histogram("hs_seconds", "latency", ("what",))
    for v in odd:
        c.inc(v)
        h.observe(0.3, v)
    r.gauge("hs_open", "open", lambda: [((v,), 1.0) for v in odd], ("what",))
    text = r.render()
    assert {v: promtext.value(text, "hs_refused_total", what=v) for v in odd} == dict.fromkeys(odd, 1)
    assert {v: promtext.value(text, "hs_seconds_count", what=v) for v in odd} == dict.fromkeys(odd, 1)
    assert promtext.value(text, "hs_seconds_bucket", what="two\nlines", le="0.25") == 0
    assert promtext.value(text, "hs_open", what='vm "web"') == 1
