"""Many SWIM nodes in one process on a :mod:`tests.fakenet` network.

Owns: building :class:`~z4node.cluster.membership.Membership` nodes with
sealers, addresses and a push/pull exchange that goes through the fake
network (so partitions, stalls and deaths affect it as they would HTTP);
killing, stalling and restarting them. Used by ``tests/test_membership.py``
and ``benchmarks/swim_sim.py``.
"""

import random

from twisted.internet.defer import Deferred
from twisted.internet.error import ConnectionRefusedError, TimeoutError

from tests.fakenet import FakeNetwork, HeapClock
from z4node.cluster.members import Member, State
from z4node.cluster.membership import Membership
from z4node.cluster.sealing import Sealer, derive_key

SECRET = "swim-test-cluster-secret"
# The fake clock starts at a realistic wall time, as the sealer's timestamps
# expect.
EPOCH = 1_700_000_000.0


def address_of(index):
    return (f"10.0.{index // 250}.{index % 250 + 1}", 9671)


class SimCluster:
    """A set of SWIM nodes, by id (``n000``, ``n001``, ...)."""

    # An HTTP push/pull that gets no answer fails after this long.
    pushpull_timeout = 5.0  # seconds

    def __init__(self, seed=0, latency=0.001, jitter=0.0, loss=0.0,
                 membership_class=Membership, pushpull=True):
        self.clock = HeapClock(EPOCH)
        self.rng = random.Random(seed)
        self.net = FakeNetwork(self.clock, self.rng, latency, jitter, loss)
        self.membership_class = membership_class
        self.use_pushpull = pushpull
        self.nodes = {}
        self.addresses = {}
        self.events = []

    def make_node(self, index, secret=SECRET, start=True):
        node_id = f"n{index:03d}"
        address = address_of(index)
        node_clock = self.net.node_clock(address)
        local = Member(node_id, address, 9672, (address[0], 9670),
                       incarnation=int(node_clock.seconds()))
        node = self.membership_class(
            node_clock, random.Random(self.rng.random()),
            Sealer(derive_key(secret, b"gossip"), node_clock, self._nonce),
            local, self._pushpull_for(address) if self.use_pushpull else None,
        )
        node.subscribe(lambda event, node_id=node_id: self.events.append(
            (self.clock.seconds(), node_id, event.kind, event.member.id)))
        self.nodes[node_id] = node
        self.addresses[node_id] = address
        self.net.listen(address, node)
        if start:
            node.start()
        return node

    def _nonce(self, size):
        return self.rng.randbytes(size)

    def _pushpull_for(self, source):
        def pushpull(member, state):
            d = Deferred()
            target = tuple(member.gossip)
            timeout = self.clock.callLater(
                self.pushpull_timeout, lambda: d.called or d.errback(TimeoutError()))

            def answer(reply):
                if not d.called:
                    timeout.cancel()
                    d.callback(reply)

            def serve():
                peer = self.node_at(target)
                if peer is None or not self.net.reachable(source, target) \
                        or not peer._running:
                    if not d.called:
                        timeout.cancel()
                        d.errback(ConnectionRefusedError())
                    return
                peer.merge_state(state)
                reply = peer.local_state()
                if self.net.reachable(target, source):
                    self.net.node_clock(source).callLater(self.net.latency, answer, reply)

            self.net.node_clock(target).callLater(self.net.latency, serve)
            return d
        return pushpull

    def node_at(self, address):
        for node_id, a in self.addresses.items():
            if a == tuple(address) and node_id in self.nodes:
                return self.nodes[node_id]
        return None

    def join_all(self, count, through=0):
        """Start ``count`` nodes, each joining through node ``through``."""
        for i in range(count):
            node = self.make_node(i)
            if i != through:
                node.join([address_of(through)])

    def seed_all(self, count):
        """Start ``count`` nodes that already know each other (a cluster that
        has converged), for simulations that study steady state."""
        nodes = [self.make_node(i, start=False) for i in range(count)]
        state = {"from": "seed", "members": [n.local.to_json() for n in nodes]}
        for node in nodes:
            node.merge_state(state)
            node._broadcasts._items.clear()
            node.start()
        del self.events[:]
        return nodes

    def kill(self, node_id):
        node = self.nodes.pop(node_id)
        node.stop()
        self.net.kill(self.addresses[node_id])

    def stall(self, node_id, seconds):
        self.net.stall(self.addresses[node_id], seconds)

    def restart(self, node_id, join_through):
        index = int(node_id[1:])
        node = self.make_node(index)
        node.join([self.addresses[join_through]])
        return node

    def run(self, seconds):
        self.clock.advance(seconds)

    def view(self, observer, member_id):
        member = self.nodes[observer]._members.get(member_id)
        return member.state if member is not None else None

    def states_of(self, member_id):
        """What every running node other than ``member_id`` thinks of it."""
        return {nid: self.view(nid, member_id) for nid in self.nodes if nid != member_id}

    def all_see(self, member_id, state):
        return all(s is state for s in self.states_of(member_id).values())

    def converged(self):
        """Every running node sees every running node alive."""
        return all(self.all_see(nid, State.ALIVE) for nid in self.nodes)

    def run_until(self, predicate, limit, step=0.1):
        """Advance until ``predicate()``; return the seconds it took, or None."""
        start = self.clock.seconds()
        while self.clock.seconds() - start < limit:
            if predicate():
                return self.clock.seconds() - start
            self.clock.advance(step)
        return self.clock.seconds() - start if predicate() else None
