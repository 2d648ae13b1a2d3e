"""The elected replica's first loop: bring the data to the schema this release knows, then rest.

Migrations run here only, one at a time, each recorded by a compare-and-swap (coordinator/domain/schema.py),
so a rolling upgrade applies each once however many new replicas start. A store failure restarts the
loop (the election's rule), and the migration that was running runs again: each is safe to repeat.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence

from coordinator.domain import schema
from coordinator.etcd.store import Store

log = logging.getLogger(__name__)


class Migrator:
    def __init__(self, store: Store, migrations: Sequence[schema.Migration], replica: str):
        self.store, self.migrations, self.replica = store, migrations, replica

    async def run(self) -> None:
        done = await schema.migrate(self.store, self.migrations, self.replica)
        if done:
            log.info("schema migrations applied: %s", ", ".join(done))
        await asyncio.Event().wait()  # done until the next election
