"""Per-replica cache of read-mostly objects (L3 networks, hosts), used only as *hints*.

Whoever uses a hint puts a compare on the entry's mod_revision into the same transaction, so a stale
hint costs a retry, never a wrong write; the replica stays stateless in every way that matters. IPAM
keeps its hints here too: per L3, the addresses known taken and where this replica's next pick starts
(a claim is still a create-only compare, so these too only save retries).
"""

from __future__ import annotations

from coordinator.etcd.store import Entry, Store, Txn

MAX = 4096
MAX_L3 = 1024  # L3s whose IPAM hints a replica keeps: L3s made and deleted over months must not add up


class Hints:
    def __init__(self) -> None:
        self._entries: dict[str, Entry | None] = {}
        self.taken: dict[str, set[str]] = {}  # L3 -> addresses known taken
        self.cursor: dict[str, int] = {}  # L3 -> where the next pick starts (an address as an integer)

    async def get(self, store: Store, key: str, fresh: bool = False) -> Entry | None:
        if fresh or key not in self._entries:
            if len(self._entries) >= MAX:
                self._entries.clear()
            self._entries[key] = await store.get(key)
        return self._entries[key]

    def taken_on(self, l3_uuid: str) -> set[str]:
        """The addresses known taken on `l3_uuid` (to add to). Past `MAX_L3` L3s every L3's hints start over:
        a replica is not told of L3s deleted on others, and a hint forgotten costs a read, never a wrong pick."""
        if l3_uuid not in self.taken and len(self.taken) >= MAX_L3:
            self.taken.clear()
            self.cursor.clear()
        return self.taken.setdefault(l3_uuid, set())

    def learn_taken(self, l3_uuid: str, taken: set[str]) -> set[str]:
        """The addresses taken on `l3_uuid` as a read found them, known from now on in place of the hint's (which
        misses those taken on other replicas and keeps those freed since); within `MAX_L3` as `taken_on`."""
        known = self.taken_on(l3_uuid)
        known.clear()
        known.update(taken)
        return known

    def forget_l3(self, l3_uuid: str) -> None:
        """`l3_uuid` is gone: its IPAM hints go too."""
        self.taken.pop(l3_uuid, None)
        self.cursor.pop(l3_uuid, None)

    def guard(self, txn: Txn, entry: Entry) -> Txn:
        """The transaction only applies while `entry` is unchanged."""
        return txn.unchanged(entry.key, entry.mod_revision)
