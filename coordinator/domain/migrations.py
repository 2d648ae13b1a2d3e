"""The schema migrations this release knows, in order (rules: `schema.py`; runner: leader/migrate.py).

None yet: the data is at `schema.BASE`. A migration is added at the end with the next version and the
prefixes whose format it changes, and must be safe to run again.

`testing()` is a migration only the rolling-upgrade test registers (the coordinator setting
`testing_migration`): it stands for "the next release", so one tree can run as the old release and as
the new one on the same etcd (tests/functional/coordinator/test_rolling_upgrade.py).
"""

from __future__ import annotations

import uuid

from coordinator.domain.schema import BASE, Migration
from coordinator.etcd import keys
from coordinator.etcd.store import Store, Txn

MIGRATIONS: list[Migration] = []
TESTING_RUNS = "/hs/testing/migration-runs/"  # one key per run of the testing migration


async def _vm_index_created_revision(store: Store) -> None:
    """VM index records gain `created_revision` (older code reads past it; it writes them without)."""
    await store.put(TESTING_RUNS + uuid.uuid4().hex, {"vm_index": await store.count(keys.VM_INDEX)})
    entries, _ = await store.list(keys.VM_INDEX)
    for e in entries:
        if isinstance(e.value, dict) and "created_revision" not in e.value:
            value = {**e.value, "created_revision": e.create_revision}
            await store.commit(Txn().unchanged(e.key, e.mod_revision).put(e.key, value))


def testing() -> Migration:
    return Migration(BASE + len(MIGRATIONS) + 1, "testing-vm-index-created-revision", (keys.VM_INDEX,),
                     _vm_index_created_revision)


def registered(with_testing: bool = False) -> list[Migration]:
    return [*MIGRATIONS, testing()] if with_testing else list(MIGRATIONS)
