"""The server side of peer RPC: ``POST /_z4/rpc/OP`` with a sealed body.

Owns: opening and checking requests (sealed with the cluster's ``rpc``
key, addressed to this node, naming the operation of the URL), dispatching
them, and sealing replies. Anything that fails the checks gets a bare 403
and is counted by the sealer; nothing about it is parsed further. The body
format lives in :mod:`z4node.cluster.rpc`.
"""

from twisted.internet.defer import maybeDeferred
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET

from z4node.cluster.rpc import open_json, seal_json


def read_body(request, limit):
    """The request body, or None if it is longer than ``limit`` bytes.

    twisted.web has buffered it (to a temp file past 100 kB) in
    ``request.content``: the node's site streams only S3 bodies, never
    those of ``/_z4/`` paths.
    """
    data = request.content.read(limit + 1)
    return None if len(data) > limit else data


class RpcResource(Resource):
    """``/_z4/rpc/``: one child per operation."""

    # A push/pull of a 500-member table is ~100 kB; refuse bodies far beyond
    # anything a peer sends before reading them into memory.
    max_body = 4 * 1024 * 1024  # bytes

    def __init__(self, cluster):
        Resource.__init__(self)
        self.cluster = cluster
        self.putChild(b"pushpull", _Operation(self, "pushpull", self.pushpull))

    def pushpull(self, request_body):
        self.cluster.membership.merge_state(request_body["state"])
        return {"state": self.cluster.membership.local_state()}


class _Operation(Resource):
    isLeaf = True

    def __init__(self, rpc, op, handler):
        Resource.__init__(self)
        self.rpc = rpc
        self.op = op
        self.handler = handler

    def render_POST(self, request):
        finished = []
        request.notifyFinish().addErrback(lambda _: finished.append(True))

        def respond(body):
            if not finished:
                request.write(body)
                request.finish()

        d = maybeDeferred(read_body, request, self.rpc.max_body)
        d.addCallback(self._answer, request)
        d.addCallback(respond)
        return NOT_DONE_YET

    def _answer(self, body, request):
        cluster = self.rpc.cluster
        obj = None if body is None else open_json(cluster.rpc_sealer, body)
        if obj is None or obj.get("op") != self.op or obj.get("to") != cluster.local.id:
            request.setResponseCode(403)
            return b""
        try:
            reply = self.handler(obj)
        except (KeyError, TypeError, ValueError):
            request.setResponseCode(400)
            return b""
        reply["op"] = self.op + "-reply"
        request.setHeader(b"content-type", b"application/octet-stream")
        return seal_json(cluster.rpc_sealer, reply)
