"""Peer RPC over HTTP: sealed JSON requests to another node's ``/_z4/rpc/``.

Owns: the body format (a JSON object sealed with the cluster's ``rpc``
key; the request names the operation and the target member, the reply
names the operation too, so a captured request cannot be replayed at
another node nor passed off as a reply) and :class:`RpcClient`, the treq
client side. The server side is ``z4node.web.rpc``. Today's one operation
is the SWIM push/pull; replication adds its own here.
"""

import json

import treq
from twisted.internet.defer import inlineCallbacks
from twisted.web.client import Agent, HTTPConnectionPool


class RpcError(Exception):
    """A peer RPC failed: refused, unreadable, or not authenticated."""


def seal_json(sealer, obj):
    return sealer.seal(json.dumps(obj, separators=(",", ":")).encode("utf-8"))


def open_json(sealer, body):
    """The object in a sealed body, or None if it must be refused."""
    payload = sealer.open(body)
    if payload is None:
        return None
    try:
        obj = json.loads(payload)
    except ValueError:
        return None
    return obj if isinstance(obj, dict) else None


class RpcClient:
    """Calls other nodes' ``/_z4/rpc/OP`` over a persistent connection pool."""

    # A push/pull of 500 members is ~100 kB; on a LAN this is milliseconds.
    # Past 5 s the peer is stalled or gone: SWIM will say which.
    timeout = 5.0  # seconds
    # Keep a couple of idle connections per peer: push/pull runs every 30 s.
    pool_size_per_peer = 2

    def __init__(self, reactor, sealer, local_id, scheme="http"):
        self._reactor = reactor
        self._sealer = sealer
        self._local_id = local_id
        self._scheme = scheme
        self._pool = HTTPConnectionPool(reactor, persistent=True)
        self._pool.maxPersistentPerHost = self.pool_size_per_peer
        if scheme == "https":
            # Bodies are sealed with the cluster secret; TLS to a peer only
            # has to get through its port (see z4node.tls).
            from z4node.tls import UnverifiedPeerTLS
            agent = Agent(reactor, contextFactory=UnverifiedPeerTLS(), pool=self._pool)
        else:
            agent = Agent(reactor, pool=self._pool)
        self._http = treq.client.HTTPClient(agent)
        self.counters = {"calls": 0, "failures": 0}

    @inlineCallbacks
    def call(self, member, op, body):
        """POST ``body`` (a dict) as ``op`` to ``member``; the reply dict."""
        self.counters["calls"] += 1
        request = dict(body, op=op, to=member.id, sender=self._local_id)
        host, port = member.s3
        url = f"{self._scheme}://{host}:{port}/_z4/rpc/{op}"
        try:
            response = yield self._http.post(
                url, data=seal_json(self._sealer, request), timeout=self.timeout,
                headers={"Content-Type": ["application/octet-stream"]})
            content = yield response.content()
        except Exception as e:
            self.counters["failures"] += 1
            raise RpcError(f"{op} to {member.id} at {host}:{port}: {e}") from e
        if response.code != 200:
            self.counters["failures"] += 1
            raise RpcError(f"{op} to {member.id}: HTTP {response.code}")
        reply = open_json(self._sealer, content)
        if reply is None or reply.get("op") != op + "-reply":
            self.counters["failures"] += 1
            raise RpcError(f"{op} to {member.id}: reply not authenticated")
        return reply

    def pushpull(self, member, state):
        """The SWIM push/pull transport: send our state, get theirs."""
        return self.call(member, "pushpull", {"state": state}).addCallback(
            lambda reply: reply["state"])

    def close(self):
        return self._pool.closeCachedConnections()
