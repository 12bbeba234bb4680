"""Nodes' ClusterService stand-ins in one process, for tests of what runs
on top of the peer channel (replicated tables): calls go straight to the
other node's handlers, on a fake clock, and every call is recorded.

Owns :class:`FakeNet` (the members, who is dead, unreachable or stalled,
the call log) and :class:`FakeCluster` (what a node's code sees: local
member, membership, owners from a real ring, serve, call, subscribe).
"""

from twisted.internet.defer import Deferred, succeed
from twisted.internet.task import Clock

from z4node.cluster.channel import CallError, PeerChannel, RemoteError, Response, RpcError
from z4node.cluster.members import IN_CLUSTER, IN_LAYOUT, MemberEvent, State
from z4node.cluster.ring import Ring, RingMember


class FakeBody:
    """A body as the channel hands it over: an async iterator of the pieces
    (``pieces``: bytes, or an async iterable of them), with
    ``read_all(limit)``."""

    def __init__(self, pieces):
        if isinstance(pieces, bytes):
            pieces = _whole(pieces)
        self._pieces = pieces.__aiter__()

    def __aiter__(self):
        return self

    async def __anext__(self):
        return await self._pieces.__anext__()

    async def read_all(self, limit):
        data = b""
        async for piece in self:
            data += piece
            if len(data) > limit:
                raise RpcError(f"body longer than {limit} bytes")
        return data


async def _whole(data):
    yield data


class FakeMember:
    def __init__(self, member_id):
        self.id = member_id
        self.state = State.ALIVE
        self.capacity = 1.0
        self.zone = None


class FakeMembership:
    has_joined = True

    def __init__(self, net):
        self.net = net

    def members(self, states=IN_CLUSTER):
        return [m for m in self.net.members.values() if m.state in states]


class FakeDht:
    """The provider directory: records kept in the FakeNet (by the hex
    hash, as ProviderDirectory takes it), found at once."""

    def __init__(self, net, member_id):
        self.net = net
        self.member_id = member_id

    @staticmethod
    def _key(chunk_hash):
        if not isinstance(chunk_hash, str):
            raise TypeError("the provider directory takes hex chunk hashes")
        return chunk_hash

    def provide(self, chunk_hash):
        self.net.providers.setdefault(self._key(chunk_hash), set()).add(self.member_id)
        return succeed(None)

    def unprovide(self, chunk_hash):
        self.net.providers.get(self._key(chunk_hash), set()).discard(self.member_id)
        return succeed(None)

    def providers(self, chunk_hash):
        return succeed(set(self.net.providers.get(self._key(chunk_hash), ())))


class FakeCluster:
    """What code on the channel uses of ClusterService, over a FakeNet."""

    def __init__(self, net, member_id):
        self.net = net
        self.local = net.members[member_id]
        self.membership = FakeMembership(net)
        self.dht = FakeDht(net, member_id)
        self.previous_ring = None
        self.handlers = {}
        self.subscribers = []

    def is_alive(self, member_id):
        return self.net.members[member_id].state in IN_CLUSTER

    def previous_owners(self, key, n=3):
        return [] if self.previous_ring is None else self.previous_ring.owners(key, n)

    def serve(self, op, handler):
        self.handlers[op] = handler

    def subscribe(self, callback):
        self.subscribers.append(callback)

    @property
    def ring(self):
        return Ring([RingMember(m.id, m.capacity, m.zone)
                     for m in self.membership.members(IN_LAYOUT)])

    @property
    def draining(self):
        return self.local.capacity == 0

    async def drain(self):
        self.local.capacity = 0.0
        self.net._announce("updated", self.local.id)

    def owners(self, key, n=3):
        return self.ring.owners(key, n)

    async def call(self, member_id, op, args, body=None):
        self.net.calls.append((self.local.id, member_id, op))
        if self.local.state is not State.ALIVE:
            raise RpcError(f"{self.local.id} is down: it calls nobody")
        target = self.net.clusters[member_id]
        if member_id in self.net.stalled:
            # No answer: the channel's call timeout ends the wait.
            waiting = Deferred()
            self.net.clock.callLater(PeerChannel.call_timeout, waiting.errback,
                                     RpcError(f"{op} to {member_id}: no reply"))
            await waiting
        if self.net.members[member_id].state is not State.ALIVE \
                or member_id in self.net.unreachable:
            raise RpcError(f"{member_id} unreachable")
        try:
            reply = await target.handlers[op](self.local.id, args,
                                              None if body is None else FakeBody(body))
        except CallError as e:
            raise RemoteError(e.code, e.message) from None
        return Response(reply.result, None if reply.body is None else FakeBody(reply.body))


class FakeNet:
    """``count`` members ``n0``, ``n1``...; ``build(cluster)`` makes what
    each node runs on its FakeCluster (kept in :attr:`nodes`)."""

    def __init__(self, count, build=None):
        self.clock = Clock()
        self.clock.advance(1_700_000_000)
        self.members = {f"n{i}": FakeMember(f"n{i}") for i in range(count)}
        self.unreachable = set()
        self.stalled = set()
        self.providers = {}  # hex chunk hash -> ids of the members providing it
        self.calls = []
        self.clusters = {m: FakeCluster(self, m) for m in self.members}
        self.nodes = {m: build(c) for m, c in self.clusters.items()} if build else {}

    def _announce(self, kind, member_id):
        for cluster in list(self.clusters.values()):
            for callback in list(cluster.subscribers):
                callback(MemberEvent(kind, self.members[member_id]))

    def add(self, member_id, build=None):
        """A new member joins; ``build(cluster)`` makes what it runs."""
        self.members[member_id] = FakeMember(member_id)
        self.clusters[member_id] = FakeCluster(self, member_id)
        if build is not None:
            self.nodes[member_id] = build(self.clusters[member_id])
        self._announce("joined", member_id)

    def forget(self, member_id):
        """A member leaves the layout (it left, or was dead too long)."""
        self.members[member_id].state = State.LEFT
        self._announce("forgotten", member_id)

    def kill(self, member_id):
        self.members[member_id].state = State.DEAD

    def revive(self, member_id):
        self.members[member_id].state = State.ALIVE
        self._announce("alive", member_id)
