"""What a well-behaved VM keeps doing while its neighbour attacks: metadata, DNS and DHCP, timed.

`poll_metadata` asks for `instance-id` on a new connection every `every` seconds (as a guest agent
polling metadata does) and keeps each latency, None for a request that got no 200 within the timeout.
`python -m testbed.victim SECONDS [EXPECT]`, started inside the VM's namespace, does the same from a
process of its own (no namespace switch per connection) and prints the samples as JSON.
"""

from __future__ import annotations

import asyncio
import json
import statistics
import sys
import time
from dataclasses import dataclass, field

from agentkit.addr import METADATA_ADDRESS
from testbed import nshttp

INSTANCE_ID = "/latest/meta-data/instance-id"


@dataclass
class Latencies:
    samples: list[float | None] = field(default_factory=list)
    timeout: float = 2.0  # what a failed request counts as

    @property
    def failures(self) -> int:
        return sum(1 for s in self.samples if s is None)

    @property
    def ok(self) -> list[float]:
        return sorted(s for s in self.samples if s is not None)

    def p99(self) -> float:
        """The 99th percentile in seconds, a failure counting as the timeout (never better than it was)."""
        values = sorted(s if s is not None else self.timeout for s in self.samples)
        if len(values) < 2:
            return values[0] if values else self.timeout
        return statistics.quantiles(values, n=100, method="inclusive")[98]

    def summary(self) -> str:
        ok = self.ok
        median = statistics.median(ok) * 1000 if ok else float("nan")
        return f"{len(self.samples)} requests, {self.failures} failed, median {median:.1f} ms, " \
               f"p99 {self.p99() * 1000:.1f} ms"


async def poll_metadata(netns: str | None, seconds: float, every: float = 0.02, path: str = INSTANCE_ID,
                        expect: str | None = None, timeout: float = 2.0) -> Latencies:
    """Ask `path` every `every` seconds for `seconds`; a reply other than 200 (and `expect`) is a failure."""
    out = Latencies(timeout=timeout)
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        t0 = time.perf_counter()
        reply = await nshttp.request(netns, METADATA_ADDRESS, path, timeout=timeout)
        took = time.perf_counter() - t0
        good = reply is not None and reply.status == 200 and (expect is None or reply.text == expect)
        out.samples.append(took if good else None)
        await asyncio.sleep(max(0.0, every - took))
    return out


def main() -> None:
    seconds, expect = float(sys.argv[1]), sys.argv[2] if len(sys.argv) > 2 else None
    print(json.dumps(asyncio.run(poll_metadata(None, seconds, expect=expect)).samples))


if __name__ == "__main__":
    main()
