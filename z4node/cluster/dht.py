"""The provider directory: a Kademlia DHT of "member M holds chunk H".

Owns: the ``kademlia`` package (nothing else in the node imports it) and
the one interface the rest of the node uses, :class:`IProviderDirectory`:
``provide(chunk_hash)``, ``providers(chunk_hash)``, ``bootstrap(addrs)``.
It answers "who has this chunk anyway" for chunks that are not on their
ring owners (hinted, or left behind by a ring change); the ring answers
who *should* have it.

The package as shipped keeps one plain value per key, republishes every
key hourly to k=20 nodes, forwards its whole store to every newcomer and
authenticates nothing. We extend its classes, never fork it:

- :class:`ProviderStorage` keeps a *set* of provider entries per key, each
  with an expiry and a MAC under the cluster's ``dht-record`` key;
- :class:`ProviderProtocol` merges on ``store``, refuses an entry whose
  provider is not the sender, never forwards other nodes' records, and
  seals every datagram with the cluster's ``dht`` key
  (:class:`SealedTransport`) and drops whatever does not open;
- :class:`ProviderServer` republishes only this node's own records, and
  rarely, and uses a small k;
- :class:`ProviderCrawl` collects entries from every close node instead of
  stopping at the first value;
- :class:`ProviderRoutingTable` answers "the k closest contacts" by
  distance over every bucket: the package's ``TableTraverser`` stops at the
  first empty bucket on one side when the other side has none, returning
  too few neighbours or none (benchmarks/swim_sim.py found it: the first
  lookup on a 100-node DHT had nobody to ask; on a table of 60 contacts
  its answer differed from the true 8 closest for 166 of 200 keys).

The package runs on asyncio; the node runs Twisted's asyncio reactor, so
coroutines become Deferreds with ``Deferred.fromFuture(ensure_future(...))``
and the Twisted clock drives the republish timer.
"""

import asyncio
import hashlib
import heapq
import hmac
import logging
import struct

from kademlia.crawling import NodeSpiderCrawl, RPCFindResponse, ValueSpiderCrawl
from kademlia.network import Server
from kademlia.node import Node
from kademlia.protocol import KademliaProtocol
from kademlia.routing import RoutingTable
from kademlia.storage import IStorage
from twisted.internet.defer import Deferred
from twisted.logger import Logger
from zope.interface import Interface, implementer

from z4node.periodic import PeriodicJob


class IProviderDirectory(Interface):
    """Who holds which chunk, beyond the ring's owners."""

    def provide(chunk_hash):
        """Announce that this node holds ``chunk_hash`` (hex str), and keep
        announcing it until :meth:`unprovide`. Deferred(int): how many nodes
        stored the record."""

    def unprovide(chunk_hash):
        """Stop announcing ``chunk_hash`` and withdraw the records stored
        for it. Deferred(int): how many nodes took the withdrawal."""

    def providers(chunk_hash):
        """Deferred(set of member ids) that announced ``chunk_hash``."""

    def bootstrap(addresses):
        """Join the DHT through ``addresses`` ((host, port) of DHT ports).
        Deferred(int): the number of DHT nodes now known."""

    def status():
        """A JSON-ready dict of counters for ``/_z4/status``."""


def node_id_for(member_id):
    """The 160-bit Kademlia id of a member: derived from its member id, so
    a store RPC can check that the sender is the provider it names."""
    return hashlib.blake2b(member_id.encode("utf-8"), digest_size=20).digest()


def dht_key(chunk_hash):
    """The 160-bit DHT key of a chunk hash."""
    return hashlib.blake2b(chunk_hash.encode("ascii"), digest_size=20,
                           person=b"z4-provider").digest()


class RecordSigner:
    """Makes and checks provider entries ``[member_id, expires, mac]``.

    The MAC (keyed BLAKE2b under the cluster's ``dht-record`` key) binds the
    member, the DHT key and the expiry: a node cannot extend or move another
    node's record, and an entry found in a lookup is known to come from a
    cluster member.
    """

    def __init__(self, key):
        self._key = key

    def _mac(self, key, member_id, expires):
        message = key + struct.pack(">q", expires) + member_id.encode("utf-8")
        return hashlib.blake2b(message, digest_size=16, key=self._key).digest()

    def make(self, key, member_id, expires):
        return [member_id, int(expires), self._mac(key, member_id, int(expires))]

    def valid(self, key, entry):
        try:
            member_id, expires, mac = entry
            return isinstance(member_id, str) and hmac.compare_digest(
                mac, self._mac(key, member_id, int(expires)))
        except (TypeError, ValueError):
            return False


class ProviderStorage(IStorage):
    """Provider entries per DHT key: ``key -> {member_id: (expires, entry)}``.

    Expired entries are dropped when read. At most :attr:`max_providers`
    are kept per key, the longest-lived first.
    """

    # A chunk held by more nodes than this needs no more announcements:
    # callers want a few places to fetch from, and a find_value reply must
    # stay one datagram.
    max_providers = 32
    # Records may live at most this long whatever their expiry says, so a
    # clock far in the future cannot pin entries.
    max_ttl = 48 * 3600.0  # seconds

    def __init__(self, clock):
        self._clock = clock
        self.data = {}

    def _live(self, key):
        now = self._clock.seconds()
        entries = self.data.get(key)
        if not entries:
            return {}
        for member_id in [m for m, (exp, _) in entries.items() if exp <= now]:
            del entries[member_id]
        if not entries:
            del self.data[key]
        return entries

    def __setitem__(self, key, entry):
        """Merge one provider entry (the caller has checked it)."""
        expires = min(entry[1], self._clock.seconds() + self.max_ttl)
        entries = self._live(key)
        entries[entry[0]] = (expires, entry)
        if len(entries) > self.max_providers:
            keep = sorted(entries.items(), key=lambda kv: -kv[1][0])[: self.max_providers]
            entries = dict(keep)
        self.data[key] = entries

    def __getitem__(self, key):
        entries = self._live(key)
        if not entries:
            raise KeyError(key)
        return [entry for _, entry in entries.values()]

    def get(self, key, default=None):
        try:
            return self[key]
        except KeyError:
            return default

    def iter_older_than(self, seconds_old):
        # Other nodes' records are never republished by us: their providers
        # republish their own (see ProviderServer.republish).
        return []

    def __iter__(self):
        for key in list(self.data):
            entries = self.get(key)
            if entries:
                yield key, entries


class SealedTransport:
    """An asyncio datagram transport that seals everything it sends."""

    def __init__(self, transport, sealer):
        self._transport = transport
        self._sealer = sealer

    def sendto(self, data, addr):
        self._transport.sendto(self._sealer.seal(data), addr)

    def close(self):
        self._transport.close()

    def get_extra_info(self, name, default=None):
        return self._transport.get_extra_info(name, default)


class ProviderRoutingTable(RoutingTable):
    """The package's routing table with a correct ``find_neighbors``."""

    def find_neighbors(self, node, k=None, exclude=None):
        k = k or self.ksize
        # Mark the key's bucket as used, as the package's traverser does, so
        # the hourly refresh skips buckets that lookups keep fresh.
        self.buckets[self.get_bucket_for(node)].touch_last_updated()
        candidates = [
            contact for bucket in self.buckets for contact in bucket.get_nodes()
            if contact.id != node.id and (exclude is None or not contact.same_home_as(exclude))
        ]
        # A table holds at most 160 buckets of k contacts: a full scan is cheap.
        return heapq.nsmallest(k, candidates, key=node.distance_to)


class ProviderProtocol(KademliaProtocol):
    """The Kademlia RPCs, sealed, with provider-set semantics for values."""

    log = Logger()

    def __init__(self, source_node, storage, ksize, sealer, signer, wait_timeout):
        KademliaProtocol.__init__(self, source_node, storage, ksize)
        self.router = ProviderRoutingTable(self, ksize, source_node)
        self._wait_timeout = wait_timeout
        self.sealer = sealer
        self.signer = signer
        self.refused_stores = 0

    def connection_made(self, transport):
        KademliaProtocol.connection_made(self, SealedTransport(transport, self.sealer))

    def datagram_received(self, data, addr):
        payload = self.sealer.open(data)
        if payload is None:
            return
        KademliaProtocol.datagram_received(self, payload, addr)

    def rpc_store(self, sender, nodeid, key, value):
        """Merge a provider entry, if it is valid and names the sender."""
        source = Node(nodeid, sender[0], sender[1])
        self.welcome_if_new(source)
        if not (isinstance(key, bytes) and self.signer.valid(key, value)
                and node_id_for(value[0]) == nodeid):
            self.refused_stores += 1
            return False
        self.storage[key] = value
        return True

    def welcome_if_new(self, node):
        # The package would push every stored record to a newcomer closer to
        # its key. Records are only ever sent by their provider (so the store
        # check above holds); providers republish their own, so a newcomer
        # learns them then.
        if self.router.is_new_node(node):
            self.router.add_contact(node)


class ProviderCrawl(ValueSpiderCrawl):
    """A value lookup that unions the entries of every close node.

    Different nodes hold different subsets of a key's providers (each
    provider stored to the k closest it saw), so the crawl does not stop at
    the first answer. ``rounds`` counts sequential RPC rounds (hops).
    """

    def __init__(self, protocol, node, peers, ksize, alpha):
        ValueSpiderCrawl.__init__(self, protocol, node, peers, ksize, alpha)
        self.entries = []
        self.rounds = 0

    async def find(self):
        self.rounds += 1
        return await self._find(self.protocol.call_find_value)

    async def _nodes_found(self, responses):
        unreachable = []
        for peer_id, response in responses.items():
            response = RPCFindResponse(response)
            if not response.happened():
                unreachable.append(peer_id)
            elif response.has_value():
                value = response.get_value()
                if isinstance(value, list):
                    self.entries.extend(value)
            else:
                self.nearest.push(response.get_node_list())
        self.nearest.remove(unreachable)
        if self.nearest.have_contacted_all():
            return self.entries
        return await self.find()


class ProviderServer(Server):
    """``kademlia.network.Server`` with our protocol, storage and crawl."""

    def __init__(self, clock, member_id, sealer, signer, ksize, alpha, wait_timeout):
        Server.__init__(self, ksize=ksize, alpha=alpha, node_id=node_id_for(member_id),
                        storage=ProviderStorage(clock))
        self._sealer = sealer
        self._signer = signer
        self._wait_timeout = wait_timeout

    def _create_protocol(self):
        return ProviderProtocol(self.node, self.storage, self.ksize, self._sealer,
                                self._signer, self._wait_timeout)

    def refresh_table(self, interval=None):
        # The package schedules an hourly refresh that also republishes every
        # stored key; ProviderDirectory drives refresh and republish of our
        # own records on the Twisted clock instead.
        pass

    async def store_entry(self, key, entry):
        """Store ``entry`` on the k nodes closest to ``key``; the count stored."""
        node = Node(key)
        nearest = self.protocol.router.find_neighbors(node)
        if not nearest:
            self.storage[key] = entry
            return 0
        spider = NodeSpiderCrawl(self.protocol, node, nearest, self.ksize, self.alpha)
        nodes = await spider.find()
        biggest = max(n.distance_to(node) for n in nodes) if nodes else 0
        if not nodes or self.node.distance_to(node) < biggest:
            self.storage[key] = entry
        results = await asyncio.gather(*(self.protocol.call_store(n, key, entry) for n in nodes))
        return sum(1 for ok, stored in results if ok and stored)

    async def find_entries(self, key):
        """Every valid, unexpired provider entry for ``key`` on the network,
        and the number of lookup rounds it took."""
        entries = list(self.storage.get(key, []))
        node = Node(key)
        nearest = self.protocol.router.find_neighbors(node)
        rounds = 0
        if nearest:
            crawl = ProviderCrawl(self.protocol, node, nearest, self.ksize, self.alpha)
            entries.extend(await crawl.find())
            rounds = crawl.rounds
        return entries, rounds


class _PackageLogToTwisted(logging.Handler):
    """Sends the package's stdlib log records to the Twisted log at debug
    level: it logs every unanswered RPC as an error, which in a DHT is
    routine (a node left), and would otherwise go to stderr unformatted."""

    log = Logger(namespace="z4node.cluster.dht.kademlia")

    def emit(self, record):
        self.log.debug("{name}: {message}", name=record.name, message=record.getMessage())


def _route_package_logs():
    for name in ("kademlia", "rpcudp"):
        package_log = logging.getLogger(name)
        if not any(isinstance(h, _PackageLogToTwisted) for h in package_log.handlers):
            package_log.addHandler(_PackageLogToTwisted())
            package_log.propagate = False


@implementer(IProviderDirectory)
class ProviderDirectory:
    """The DHT node of this member, behind :class:`IProviderDirectory`.

    ``sealer`` seals datagrams (the cluster's ``dht`` purpose), ``signer``
    makes provider entries (``dht-record``). Call :meth:`listen` first.
    """

    log = Logger()

    # k: replicas of each record and bucket size. The package's 20 suits an
    # open internet swarm; in a cluster of tens to hundreds of our own nodes,
    # 8 copies survive any plausible simultaneous loss at 40% of the traffic.
    ksize = 8
    # Lookups in flight at once, Kademlia's usual 3.
    alpha = 3
    # A record lives a day: long enough that 4 republishes may fail in a
    # row, short enough that a vanished provider stops being offered.
    record_ttl = 24 * 3600.0  # seconds
    # Our own records are re-stored every 6 hours (the package: hourly, and
    # everyone's): 4 chances per TTL, and new close nodes learn them then.
    republish_interval = 6 * 3600.0  # seconds
    # Refresh routing-table buckets that saw no lookup for an hour, as the
    # Kademlia paper does.
    refresh_interval = 3600.0  # seconds
    # A DHT RPC unanswered after this long is a lost packet or a dead node;
    # LAN round trips are under a millisecond (the package waits 5 s).
    rpc_timeout = 2.0  # seconds

    def __init__(self, clock, member_id, sealer, signer):
        _route_package_logs()
        self._clock = clock
        self.member_id = member_id
        self._signer = signer
        self.server = ProviderServer(clock, member_id, sealer, signer, self.ksize,
                                     self.alpha, self.rpc_timeout)
        self._own = {}  # chunk hash -> when last published
        # A failed refresh (a lookup that raised) is logged and counted,
        # and the next one comes on time.
        self._maintenance = PeriodicJob("DHT maintenance", clock, self._maintain)
        self.republish_failures = 0
        self.port = None

    @staticmethod
    def _deferred(coroutine):
        return Deferred.fromFuture(asyncio.ensure_future(coroutine))

    def listen(self, port, interface):
        """Start listening on UDP ``interface:port``; Deferred(bound port)."""
        d = self._deferred(self.server.listen(port, interface))

        def listening(_):
            self.port = self.server.transport.get_extra_info("sockname")[1]
            self._maintenance.start(self.refresh_interval)
            return self.port

        return d.addCallback(listening)

    def stop(self):
        self._maintenance.stop()
        self.server.stop()

    def bootstrap(self, addresses):
        d = self._deferred(self.server.bootstrap([tuple(a) for a in addresses]))
        return d.addCallback(lambda _: self.known_nodes())

    def known_nodes(self):
        if self.server.protocol is None:
            return 0
        return sum(len(bucket) for bucket in self.server.protocol.router.buckets)

    def provide(self, chunk_hash):
        self._own[chunk_hash] = self._clock.seconds()
        return self._publish(chunk_hash)

    def unprovide(self, chunk_hash):
        self._own.pop(chunk_hash, None)
        # A record of ours that expired long ago: it replaces the live one
        # wherever that is kept, and is dropped there when next read. Only
        # we can sign it, as any record of ours.
        return self._publish(chunk_hash, expires=0)

    def _publish(self, chunk_hash, expires=None):
        key = dht_key(chunk_hash)
        if expires is None:
            expires = self._clock.seconds() + self.record_ttl
        entry = self._signer.make(key, self.member_id, expires)
        return self._deferred(self.server.store_entry(key, entry))

    def providers(self, chunk_hash):
        return self.lookup(chunk_hash).addCallback(lambda found: found[0])

    def lookup(self, chunk_hash):
        """Deferred((set of member ids, lookup rounds)) for ``chunk_hash``."""
        key = dht_key(chunk_hash)

        def checked(result):
            entries, rounds = result
            now = self._clock.seconds()
            members = {
                e[0] for e in entries
                if self._signer.valid(key, e) and e[1] > now
            }
            return members, rounds

        return self._deferred(self.server.find_entries(key)).addCallback(checked)

    def _maintain(self):
        """Refresh stale buckets; republish our records that are due."""
        now = self._clock.seconds()
        due = [h for h, at in self._own.items() if now - at >= self.republish_interval]
        for chunk_hash in due:
            self._own[chunk_hash] = now
            self._publish(chunk_hash).addErrback(self._republish_failed, chunk_hash)
        # The package's refresh crawls lonely buckets and republishes what
        # storage.iter_older_than yields: nothing, for ProviderStorage.
        return self._deferred(self.server._refresh_table())

    def _republish_failed(self, failure, chunk_hash):
        # The record is still ours: the next maintenance pass past
        # republish_interval tries again.
        self.republish_failures += 1
        self.log.warn("republishing provider record {h} failed: {why}", h=chunk_hash,
                      why=failure.getErrorMessage())

    def status(self):
        protocol = self.server.protocol
        return {
            "port": self.port,
            "known_nodes": self.known_nodes(),
            "own_records": len(self._own),
            "stored_keys": len(self.server.storage.data),
            "refused_stores": protocol.refused_stores if protocol else 0,
            "packets": self.server._sealer.counters(),
            "maintenance": self._maintenance.status(),
            "republish_failures": self.republish_failures,
        }
