"""A fake :class:`~z4node.cluster.dht.IProviderDirectory`: every fake
directory sharing one :class:`MemoryDHT` sees the others' records, which
expire on the injected clock exactly as real records do.
"""

from twisted.internet.defer import succeed
from zope.interface import implementer

from z4node.cluster.dht import IProviderDirectory, ProviderDirectory


class MemoryDHT:
    """The shared "network": chunk hash -> {member id: expires}."""

    def __init__(self, clock):
        self.clock = clock
        self.records = {}
        self.nodes = set()

    def directory(self, member_id):
        return MemoryProviderDirectory(self, member_id)


@implementer(IProviderDirectory)
class MemoryProviderDirectory:
    """One member's view of a :class:`MemoryDHT`.

    Republishes its own records every ``republish_interval`` like the real
    one (call :meth:`maintain` from the test's clock loop, or let
    :meth:`provide` stamp them); records expire after ``record_ttl``.
    """

    record_ttl = ProviderDirectory.record_ttl
    republish_interval = ProviderDirectory.republish_interval

    def __init__(self, dht, member_id):
        self._dht = dht
        self.member_id = member_id
        self._own = {}
        dht.nodes.add(member_id)

    def provide(self, chunk_hash):
        now = self._dht.clock.seconds()
        self._own[chunk_hash] = now
        self._dht.records.setdefault(chunk_hash, {})[self.member_id] = now + self.record_ttl
        return succeed(len(self._dht.nodes))

    def unprovide(self, chunk_hash):
        self._own.pop(chunk_hash, None)
        self._dht.records.get(chunk_hash, {}).pop(self.member_id, None)
        return succeed(len(self._dht.nodes))

    def providers(self, chunk_hash):
        now = self._dht.clock.seconds()
        entries = self._dht.records.get(chunk_hash, {})
        return succeed({m for m, expires in entries.items() if expires > now})

    def bootstrap(self, addresses):
        return succeed(len(self._dht.nodes) - 1)

    def status(self):
        return {"known_nodes": len(self._dht.nodes) - 1, "own_records": len(self._own)}

    def maintain(self):
        """Republish own records that are due, as the real directory does."""
        now = self._dht.clock.seconds()
        for chunk_hash, at in list(self._own.items()):
            if now - at >= self.republish_interval:
                self.provide(chunk_hash)
