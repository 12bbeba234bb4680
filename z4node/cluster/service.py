"""The cluster as one service: membership, ring and provider directory of
this node, started and stopped together.

Owns: wiring — the cluster secret and its per-purpose sealers, the UDP
listeners, keeping :attr:`ClusterService.ring` equal to the ring of the
current layout (members alive, suspect or dead, until a dead one is
forgotten: the ring is not liveness), seeding the DHT from members as they
join, and graceful leave on stop. This is the object the rest of the node
talks to:

- ``cluster.membership.members()`` — who is in the cluster (alive or
  suspect), as :class:`~z4node.cluster.membership.Member` snapshots;
- ``cluster.owners(key, n)`` — the ``n`` member ids that own ``key``
  (bytes: a chunk's raw hash, or ``ring.bucket_key(name)``), alive or not;
- ``cluster.previous_owners(key, n)`` — its owners in the ring whose data
  is still moving to the current one, while it moves;
- ``cluster.is_alive(member_id)`` — whether a write can go there now;
- ``cluster.drain()`` — this node leaves the ring (capacity 0) so that its
  data moves away (``z4node.replication.rebalance``);
- ``cluster.dht.provide(hash)`` / ``cluster.dht.providers(hash)``;
- ``cluster.serve(op, handler)`` and ``cluster.call(member_id, op, args,
  body)`` — the peer channel (:mod:`z4node.cluster.channel`), which listens
  on TCP at the gossip port number;
- ``cluster.subscribe(callback)`` — :class:`MemberEvent`\\ s, delivered
  after the ring has been rebuilt for them, so a subscriber that calls
  ``owners()`` sees the new placement.
"""

import json
import os
import random

from twisted.application.service import MultiService
from twisted.internet.defer import Deferred, maybeDeferred, succeed
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger

from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol

from z4node import durable
from z4node.cluster.channel import CallError, ChannelFactory, PeerChannel, Reply, RpcError
from z4node.cluster.dht import ProviderDirectory, RecordSigner
from z4node.cluster.members import IN_CLUSTER, IN_LAYOUT, Member
from z4node.cluster.membership import Membership
from z4node.cluster.options import check_cluster_options, load_secret
from z4node.cluster.ring import Ring
from z4node.cluster.sealing import Sealer, derive_key


# In the data dir: the gossip addresses of the layout's other members.
PEERS_FILE = "peers.json"
# In the data dir while the node drains (it keeps capacity 0 across restarts).
DRAIN_FILE = "draining"


class ClusterService(MultiService):
    """Membership, ring and DHT of one node (see the module docstring)."""

    log = Logger()

    # Seed the DHT's routing table from joining members until it knows this
    # many nodes; after that the DHT's own lookups keep it filled.
    dht_seed_target = ProviderDirectory.ksize

    def __init__(self, reactor, rng, secret, local, interface, join=(), vnodes=None,
                 peers_file=None, drain_file=None):
        MultiService.__init__(self)
        self._reactor = reactor
        self._interface = interface
        self._join = list(join)
        # Where the members' gossip addresses are kept for the next start.
        self._peers_file = peers_file
        self._peers_saved = None
        self._peers_writes = succeed(None)  # one write at a time, in order
        self._drain_file = drain_file
        self.vnodes = vnodes
        self.local = local
        self.membership = Membership(
            reactor, rng, Sealer(derive_key(secret, b"gossip"), reactor), local,
            self._pushpull)
        self.dht = ProviderDirectory(
            reactor, local.id, Sealer(derive_key(secret, b"dht"), reactor),
            RecordSigner(derive_key(secret, b"dht-record")))
        self.ring = Ring(self.membership.members(IN_LAYOUT), vnodes)
        # The ring whose data is still moving to :attr:`ring` (None when
        # none is): kept by the rebalancer, asked by readers.
        self.previous_ring = None
        channel_key = derive_key(secret, b"channel")
        self.channel_sealer = Sealer(channel_key, reactor)
        self.handlers = {}
        self._channel_factory = ChannelFactory(reactor, self.channel_sealer, channel_key,
                                               local.id, self.handlers)
        self.channel = PeerChannel(reactor, self.channel_sealer, channel_key, local.id,
                                   self._connect_channel)
        self.serve("swim.pushpull", self._serve_pushpull)
        self._subscribers = []
        self._gossip_port = None
        self._channel_port = None
        self._dht_listening = False
        self._dht_seeding = False
        self._dht_known = 0  # DHT nodes known after the last bootstrap
        self.membership.subscribe(self._membership_changed)

    @classmethod
    def from_options(cls, reactor, options, environ, node_id, s3_host, s3_port, data_dir):
        """Build from ``z4node.tap.Options`` (which include CLUSTER_OPTIONS).

        ``s3_host``/``s3_port`` are where this node serves S3 (shown to
        peers and operators); the gossip, channel and DHT ports listen on
        ``s3_host`` too.
        Raises ``usage.UsageError`` for unusable options or a missing secret.
        """
        advertise, join = check_cluster_options(options, s3_host)
        secret = load_secret(environ, options["cluster-key-file"], data_dir, bool(join))
        drain_file = os.path.join(data_dir, DRAIN_FILE)
        # A node that began draining stays draining when it restarts.
        capacity = 0.0 if os.path.exists(drain_file) else options["capacity"]
        local = Member(
            node_id, (advertise, options["gossip-port"]), options["dht-port"],
            (advertise, s3_port), options["zone"], capacity,
            # Wall-clock seconds: a restarted node's first incarnation is
            # already newer than anything the cluster remembers of it.
            incarnation=int(reactor.seconds()),
        )
        # Seeded from the OS: two nodes must not pick the same probe order.
        rng = random.Random()
        interface = "" if s3_host in ("0.0.0.0", "::") else s3_host
        service = cls(reactor, rng, secret, local, interface, join, options["vnodes"],
                      os.path.join(data_dir, PEERS_FILE), drain_file)
        service.membership.dead_retention = options["dead-grace"] * 3600
        return service

    # -- what the rest of the node calls ---------------------------------------

    def owners(self, key, n=3):
        """The ids of the ``n`` members owning ``key`` (bytes), in preference
        order, whether or not they are alive now."""
        return self.ring.owners(key, n)

    @property
    def draining(self):
        """Whether this node is draining: capacity 0, owning nothing."""
        return self.local.capacity == 0

    async def drain(self):
        """Start draining this node: remember it in the data dir (a restart
        keeps draining), then announce capacity 0, so every member's ring
        leaves this node out and the rebalancers move its data away."""
        if self.draining:
            return
        if self._drain_file is not None:
            await deferToThreadPool(self._reactor, self._reactor.getThreadPool(),
                                    durable.write_file, self._drain_file, b"draining\n")
        self.membership.set_capacity(0.0)

    def previous_owners(self, key, n=3):
        """The owners of ``key`` in the ring whose data is still moving to
        the current one; none when no data is moving."""
        ring = self.previous_ring
        return [] if ring is None else ring.owners(key, n)

    def is_alive(self, member_id):
        """Whether ``member_id`` is alive or suspect (worth sending to)."""
        member = self.membership.get(member_id)
        return member is not None and member.state in IN_CLUSTER

    def serve(self, op, handler):
        """Answer peers' calls of ``op`` with ``async handler(peer_id, args,
        body)``, which returns a :class:`~z4node.cluster.channel.Reply`."""
        self.handlers[op] = handler

    def call(self, member_id, op, args, body=None):
        """Call ``op`` on a member over the peer channel: a coroutine of its
        :class:`~z4node.cluster.channel.Response`; RpcError if it fails."""
        member = self.membership.get(member_id)
        if member is None:
            raise RpcError(f"{op}: no member {member_id}")
        return self.channel.call(member, op, args, body)

    def _pushpull(self, member, state):
        """SWIM's push/pull transport: send our table, get the peer's."""
        d = Deferred.fromCoroutine(self.channel.call(member, "swim.pushpull",
                                                     {"state": state}))
        return d.addCallback(lambda response: response.result["state"])

    async def _serve_pushpull(self, peer_id, args, body):
        state = args.get("state")
        if not isinstance(state, dict) or not isinstance(state.get("members"), list):
            raise CallError("BadRequest", "state must be a member table")
        self.membership.merge_state(state)
        return Reply({"state": self.membership.local_state()})

    def _connect_channel(self, member, protocol):
        endpoint = TCP4ClientEndpoint(self._reactor, member.gossip[0], member.gossip[1],
                                      timeout=self.channel.connect_timeout)
        return connectProtocol(endpoint, protocol)

    def subscribe(self, callback):
        """Call ``callback(MemberEvent)`` on every membership change, after
        :attr:`ring` reflects it."""
        self._subscribers.append(callback)

    def unsubscribe(self, callback):
        self._subscribers.remove(callback)

    def _membership_changed(self, event):
        if event.changes_ring:
            self.ring = Ring(self.membership.members(IN_LAYOUT), self.vnodes)
            self._remember_peers()
        if event.kind == "joined":
            self._seed_dht(event.member)
        for callback in list(self._subscribers):
            try:
                callback(event)
            except Exception:
                self.log.failure("cluster subscriber failed on {event}", event=event)

    def _remember_peers(self):
        """Save the layout's gossip addresses (in the background): a
        restart joins through them. Without this a node started without
        ``--join`` (a cluster's first) came back alone and stayed alone,
        since the others stop probing a member they declared dead."""
        if self._peers_file is None:
            return
        addresses = sorted({m.gossip for m in self.membership.members(IN_LAYOUT)
                            if m.id != self.local.id})
        data = json.dumps([list(a) for a in addresses]).encode("utf-8")
        if data == self._peers_saved:
            return
        self._peers_saved = data

        def write(_):
            return deferToThreadPool(self._reactor, self._reactor.getThreadPool(),
                                     durable.write_file, self._peers_file, data)
        self._peers_writes.addCallback(write).addErrback(
            lambda f: self.log.failure("cluster: saving the peer list failed", f))

    def _remembered_peers(self):
        """The gossip addresses saved by the last run (none if unreadable)."""
        if self._peers_file is None:
            return []
        try:
            with open(self._peers_file, "rb") as f:
                return [(str(host), int(port)) for host, port in json.load(f)]
        except FileNotFoundError:
            return []
        except (OSError, ValueError, TypeError) as e:
            self.log.warn("cluster: ignoring the saved peer list {path}: {why}",
                          path=self._peers_file, why=str(e))
            return []

    def _seed_dht(self, member):
        if self._dht_seeding or not self._dht_listening \
                or self._dht_known >= self.dht_seed_target:
            return
        self._dht_seeding = True

        def known(count):
            self._dht_known = count

        def done(result):
            self._dht_seeding = False
            return result

        d = self.dht.bootstrap([member.dht])
        d.addCallback(known)
        d.addBoth(done)
        d.addErrback(lambda f: self.log.warn("DHT bootstrap from {m} failed: {why}",
                                             m=member.id, why=f.getErrorMessage()))

    # -- service -----------------------------------------------------------------

    def startService(self):
        MultiService.startService(self)
        self._gossip_port = self._reactor.listenUDP(
            self.local.gossip[1], self.membership, interface=self._interface)
        self._channel_port = self._reactor.listenTCP(
            self.local.gossip[1], self._channel_factory, interface=self._interface)
        self.membership.start()
        self.log.info("cluster: node {id} gossip on {gh}:{gp} (UDP; peer channel on TCP), "
                      "DHT on UDP {dp}",
                      id=self.local.id, gh=self.local.gossip[0], gp=self.local.gossip[1],
                      dp=self.local.dht_port)
        d = self.dht.listen(self.local.dht_port, self._interface or "0.0.0.0")
        d.addCallback(self._dht_started)
        d.addErrback(lambda f: self.log.failure("DHT failed to start", f))
        join = self._join + [a for a in self._remembered_peers() if a not in self._join]
        join = [a for a in join if a != self.local.gossip]
        if join:
            self.membership.join(join)

    def _dht_started(self, port):
        self._dht_listening = True
        for member in self.membership.members():
            if member.id != self.local.id:
                self._seed_dht(member)

    def stopService(self):
        # Leave first, while the gossip socket can still carry the news.
        self.membership.leave()
        self.dht.stop()
        d = maybeDeferred(self._gossip_port.stopListening)
        d.addCallback(lambda _: self._channel_port.stopListening())
        d.addCallback(lambda _: self.channel.close())
        d.addCallback(lambda _: MultiService.stopService(self))
        return d

    def status(self):
        """This node's cluster health and counters, for ``/_z4/status``."""
        return {
            "membership": self.membership.status(),
            "ring": {"members": len(self.ring), "fingerprint": self.ring.fingerprint(),
                     "vnodes_per_capacity": self.ring.vnodes},
            "dht": self.dht.status(),
            "channel": dict(self.channel.counters, packets=self.channel_sealer.counters()),
        }
