"""The peer status endpoints: read-only JSON under ``/_z4/`` on the S3 port.

Owns: ``/_z4/ping``, ``/_z4/peers``, ``/_z4/ring`` (``?key=K&n=N``),
``/_z4/providers/HASH`` and ``/_z4/status``, and :func:`make_z4_resource`,
which builds the ``/_z4/`` resource (these plus ``/_z4/rpc/`` from
:mod:`z4node.web.rpc`) for the node's site. Shows no secrets: member
addresses, states and counters only. docs/cluster.md documents every
field.
"""

import re

from twisted.web.resource import Resource

import z4node
from z4node.web.json_resource import HTTPError, JSONResource
from z4node.web.rpc import RpcResource

# A chunk hash as the storage layer names chunks: BLAKE3 in lowercase hex
# (64 characters); shorter hex names are accepted for other key schemes.
HASH_PATTERN = re.compile(r"^[0-9a-f]{16,128}$")


class _Base(JSONResource):
    def __init__(self, reactor, node_info, cluster):
        JSONResource.__init__(self)
        self.reactor = reactor
        self.node_info = node_info
        self.cluster = cluster

    def uptime(self):
        return round(self.reactor.seconds() - self.node_info["started"], 3)


class Ping(_Base):
    def get(self, request):
        return {"id": self.node_info["id"], "version": z4node.__version__,
                "uptime": self.uptime()}


class Peers(_Base):
    def get(self, request):
        now = self.reactor.seconds()
        members = []
        for member in self.cluster.membership.all_members():
            entry = member.to_json()
            entry["self"] = member.id == self.node_info["id"]
            entry["last_heard_ago"] = (
                None if member.last_heard is None else round(now - member.last_heard, 3))
            members.append(entry)
        return {"id": self.node_info["id"], "members": members}


class RingView(_Base):
    # More owners than this in one query is a mistake, not a question.
    max_n = 16

    def get(self, request):
        ring = self.cluster.ring
        key = request.args.get(b"key", [None])[0]
        if key is None:
            return ring.summary()
        try:
            n = int(request.args.get(b"n", [b"3"])[0])
        except ValueError:
            raise HTTPError(400, "n must be an integer")
        if not 1 <= n <= self.max_n:
            raise HTTPError(400, f"n must be 1..{self.max_n}")
        owners = []
        for member_id in ring.owners(key, n):
            member = self.cluster.membership.get(member_id)
            owners.append({"id": member_id, "s3": list(member.s3), "zone": member.zone,
                           "state": member.state.value})
        return {"key": key.decode("utf-8", "replace"), "n": n,
                "fingerprint": ring.fingerprint(), "owners": owners}


class Providers(Resource):
    def __init__(self, reactor, node_info, cluster):
        Resource.__init__(self)
        self.args = (reactor, node_info, cluster)

    def getChild(self, name, request):
        return ProvidersOf(*self.args, name.decode("ascii", "replace"))


class ProvidersOf(_Base):
    def __init__(self, reactor, node_info, cluster, chunk_hash):
        _Base.__init__(self, reactor, node_info, cluster)
        self.chunk_hash = chunk_hash

    def get(self, request):
        if not HASH_PATTERN.match(self.chunk_hash):
            raise HTTPError(400, "HASH must be a lowercase hex chunk hash")
        d = self.cluster.dht.providers(self.chunk_hash)
        return d.addCallback(lambda members: {"hash": self.chunk_hash,
                                              "providers": sorted(members)})


class Status(_Base):
    def get(self, request):
        status = {"id": self.node_info["id"], "version": z4node.__version__,
                  "uptime": self.uptime()}
        status.update(self.cluster.status())
        jobs = self.node_info.get("jobs")
        if jobs is not None:
            status["jobs"] = jobs()
        return status


def make_z4_resource(reactor, node_info, cluster, root=None):
    """The ``/_z4/`` resource of a node: the endpoints mounted on ``root``
    (a new ``Resource`` if None; the node passes the one its site already
    serves when the cluster starts after the port opens).

    ``node_info`` is ``{"id": str, "started": seconds}`` (``reactor.seconds()``
    when the node started), and optionally ``"jobs"``: a callable returning
    the background jobs' counters for ``/_z4/status``; ``cluster`` is the node's
    :class:`~z4node.cluster.service.ClusterService`.
    """
    root = Resource() if root is None else root
    for name, cls in ((b"ping", Ping), (b"peers", Peers), (b"ring", RingView),
                      (b"providers", Providers), (b"status", Status)):
        root.putChild(name, cls(reactor, node_info, cluster))
    root.putChild(b"rpc", RpcResource(cluster))
    return root
