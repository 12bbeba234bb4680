"""The peer status endpoints: JSON under ``/_z4/`` on the S3 port.

Owns: ``/_z4/ping`` (public: the liveness answer), ``/_z4/peers``,
``/_z4/ring`` (``?key=K&n=N``), ``/_z4/providers/HASH`` and
``/_z4/status`` (each only for requests signed by an admin key, see
:mod:`z4node.web.access`: they show member addresses and counters, and a
provider lookup costs a DHT crawl), and :func:`make_z4_resource`, which
builds the ``/_z4/`` resource for the node's site. Shows no secrets. Peers
do not call each other here: they use the peer channel
(:mod:`z4node.cluster.channel`).
docs/cluster.md documents every field.
"""

import re
from collections import OrderedDict
from urllib.parse import parse_qs

from twisted.internet.defer import Deferred, succeed

import z4node
from z4node.web.access import AdminAccess
from z4node.web.json_resource import HTTPError, JSONResource, Z4Resource

# A chunk hash as the storage layer names chunks: BLAKE3 in lowercase hex
# (64 characters); shorter hex names are accepted for other key schemes.
HASH_PATTERN = re.compile(r"^[0-9a-f]{16,128}$")


class ProviderLookups:
    """DHT provider lookups for ``/_z4/providers/HASH``, each a crawl of
    several DHT round trips: answers are kept ``ttl_seconds``, concurrent
    asks for one hash share one crawl, and new crawls are rate limited
    node-wide (a token bucket), so the endpoint cannot be used to make the
    node flood the DHT."""

    # Provider records live 24 h and are republished every 6 h; an answer
    # 10 s old is as good as a new one for an operator's question.
    ttl_seconds = 10.0
    max_cached = 1024
    # Crawls started per second, and the burst allowed above that.
    crawls_per_second = 2.0
    burst = 10

    def __init__(self, clock, dht):
        self.clock = clock
        self.dht = dht
        self._cache = OrderedDict()  # hash -> (expires, Deferred or set)
        self._tokens = float(self.burst)
        self._refilled = clock.seconds()
        self.counters = {"crawls": 0, "cached": 0, "limited": 0}

    def providers(self, chunk_hash):
        """Deferred(set of member ids); raises HTTPError 503 when over the
        rate limit."""
        now = self.clock.seconds()
        hit = self._cache.get(chunk_hash)
        if hit is not None and hit[0] > now:
            self.counters["cached"] += 1
            if isinstance(hit[1], set):
                return succeed(set(hit[1]))
            # A crawl for this hash is under way: wait for its answer.
            waiter = Deferred()
            hit[1].append(waiter)
            return waiter
        if not self._take_token(now):
            self.counters["limited"] += 1
            raise HTTPError(503, "too many provider lookups; retry in a moment")
        self.counters["crawls"] += 1
        first = Deferred()
        waiters = [first]
        self._remember(chunk_hash, now, waiters)

        def done(members):
            self._remember(chunk_hash, self.clock.seconds(), set(members))
            for waiter in waiters:
                waiter.callback(set(members))

        def failed(failure):
            self._cache.pop(chunk_hash, None)
            for waiter in waiters:
                waiter.errback(failure)
        self.dht.providers(chunk_hash).addCallbacks(done, failed)
        return first

    def _remember(self, chunk_hash, now, answer):
        self._cache[chunk_hash] = (now + self.ttl_seconds, answer)
        self._cache.move_to_end(chunk_hash)
        while len(self._cache) > self.max_cached:
            self._cache.popitem(last=False)

    def _take_token(self, now):
        self._tokens = min(self.burst,
                           self._tokens + (now - self._refilled) * self.crawls_per_second)
        self._refilled = now
        if self._tokens < 1:
            return False
        self._tokens -= 1
        return True


class _Base(JSONResource):
    def __init__(self, reactor, node_info, cluster, access):
        JSONResource.__init__(self, access)
        self.reactor = reactor
        self.node_info = node_info
        self.cluster = cluster

    def uptime(self):
        return uptime(self.reactor, self.node_info)


class Ping(_Base):
    def get(self, request):
        return {"id": self.node_info["id"], "version": z4node.__version__,
                "uptime": self.uptime()}


def uptime(clock, node_info):
    return round(clock.seconds() - node_info["started"], 3)


def peers_view(clock, node_info, cluster):
    """What ``/_z4/peers`` answers (the console shows it too)."""
    now = clock.seconds()
    members = []
    for member in cluster.membership.all_members():
        entry = member.to_json()
        entry["self"] = member.id == node_info["id"]
        entry["last_heard_ago"] = (
            None if member.last_heard is None else round(now - member.last_heard, 3))
        members.append(entry)
    return {"id": node_info["id"], "members": members}


def status_view(clock, node_info, cluster):
    """What ``/_z4/status`` answers (the console shows it too)."""
    status = {"id": node_info["id"], "version": z4node.__version__,
              "uptime": uptime(clock, node_info)}
    status.update(cluster.status())
    jobs = node_info.get("jobs")
    if jobs is not None:
        status["jobs"] = jobs()
    return status


class Peers(_Base):
    def get(self, request):
        return peers_view(self.reactor, self.node_info, self.cluster)


class RingView(_Base):
    # More owners than this in one query is a mistake, not a question.
    max_n = 16

    def get(self, request):
        ring = self.cluster.ring
        # The node's site leaves the query to each resource (request.args
        # stays empty: the S3 pipeline parses its own).
        args = parse_qs(request.uri.partition(b"?")[2])
        key = args.get(b"key", [None])[0]
        if key is None:
            return ring.summary()
        n = args.get(b"n", [b"3"])[0]
        if not (n.isdigit() and len(n) <= 2):
            raise HTTPError(400, f"n must be an integer 1..{self.max_n}")
        n = int(n)
        if not 1 <= n <= self.max_n:
            raise HTTPError(400, f"n must be 1..{self.max_n}")
        owners = []
        for member_id in ring.owners(key, n):
            member = self.cluster.membership.get(member_id)
            owners.append({"id": member_id, "s3": list(member.s3), "zone": member.zone,
                           "state": member.state.value})
        return {"key": key.decode("utf-8", "replace"), "n": n,
                "fingerprint": ring.fingerprint(), "owners": owners}


class Providers(Z4Resource):
    """``/_z4/providers/``: one child per chunk hash, sharing the lookups."""

    def __init__(self, reactor, node_info, cluster, access):
        Z4Resource.__init__(self)
        self.args = (reactor, node_info, cluster, access)
        self.lookups = ProviderLookups(reactor, cluster.dht)

    def getChild(self, name, request):
        return ProvidersOf(*self.args, self.lookups, name.decode("ascii", "replace"))


class ProvidersOf(_Base):
    def __init__(self, reactor, node_info, cluster, access, lookups, chunk_hash):
        _Base.__init__(self, reactor, node_info, cluster, access)
        self.lookups = lookups
        self.chunk_hash = chunk_hash

    def get(self, request):
        if not HASH_PATTERN.match(self.chunk_hash):
            raise HTTPError(400, "HASH must be a lowercase hex chunk hash")
        d = self.lookups.providers(self.chunk_hash)
        return d.addCallback(lambda members: {"hash": self.chunk_hash,
                                              "providers": sorted(members)})


class Status(_Base):
    def get(self, request):
        return status_view(self.reactor, self.node_info, self.cluster)


def make_z4_resource(reactor, node_info, cluster, keys, root=None):
    """The ``/_z4/`` resource of a node: the endpoints mounted on ``root``
    (a new one if None; the node passes the one its site already serves
    when the cluster starts after the port opens, from
    :func:`new_z4_root`).

    ``node_info`` is ``{"id": str, "started": seconds}`` (``reactor.seconds()``
    when the node started), and optionally ``"jobs"``: a callable returning
    the background jobs' counters for ``/_z4/status``; ``cluster`` is the node's
    :class:`~z4node.cluster.service.ClusterService`; ``keys`` the access
    keys that sign admin requests (see :class:`~z4node.web.access.AdminAccess`).
    """
    root = new_z4_root() if root is None else root
    access = AdminAccess(reactor, keys)
    root.putChild(b"ping", Ping(reactor, node_info, cluster, None))
    for name, cls in ((b"peers", Peers), (b"ring", RingView), (b"providers", Providers),
                      (b"status", Status)):
        root.putChild(name, cls(reactor, node_info, cluster, access))
    return root


def new_z4_root():
    """An empty ``/_z4/`` resource for :func:`make_z4_resource` to fill."""
    return Z4Resource()
