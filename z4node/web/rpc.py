"""The server side of peer RPC: ``POST /_z4/rpc/OP`` with a sealed body.

Owns: opening and checking requests (sealed with the cluster's ``rpc``
key, addressed to this node, naming the operation of the URL), dispatching
them, and sealing replies. Anything that fails the checks gets a bare 403
and is counted by the sealer; nothing about it is parsed further. The body
format lives in :mod:`z4node.cluster.rpc`.

The body is refused on its headers when it announces more than
``RpcResource.max_body`` bytes, and a chunked one is cut off there: the
node's site streams it (``z4node.s3.http``), so nothing is read, spooled or
buffered beyond that before the seal is checked.
"""

from twisted.internet.defer import Deferred
from twisted.logger import Logger
from twisted.web.server import NOT_DONE_YET

from z4node.cluster.rpc import open_json, seal_json
from z4node.s3.errors import S3Error
from z4node.s3.http import BodyIncomplete
from z4node.web.json_resource import Z4Resource

log = Logger()


class RpcResource(Z4Resource):
    """``/_z4/rpc/``: one child per operation."""

    # A push/pull of a 500-member table is ~100 kB; refuse bodies far beyond
    # anything a peer sends before reading them into memory.
    max_body = 4 * 1024 * 1024  # bytes

    def __init__(self, cluster):
        Z4Resource.__init__(self)
        self.cluster = cluster
        self.putChild(b"pushpull", _Operation(self, "pushpull", self.pushpull))

    def pushpull(self, request_body):
        self.cluster.membership.merge_state(request_body["state"])
        return {"state": self.cluster.membership.local_state()}


class _Operation(Z4Resource):
    isLeaf = True

    def __init__(self, rpc, op, handler):
        Z4Resource.__init__(self)
        self.rpc = rpc
        self.op = op
        self.handler = handler

    def render_POST(self, request):
        length = request.body_length
        if length is not None and length > self.rpc.max_body:
            # Refused on its headers: the body is never read, and the
            # connection closes after this answer.
            request.setResponseCode(413)
            return b""
        finished = []
        request.notifyFinish().addErrback(lambda _: finished.append(True))

        def respond(body):
            if not finished:
                request.write(body)
                request.finish()

        d = Deferred.fromCoroutine(request.body.read_all(self.rpc.max_body))
        d.addCallbacks(self._answer, self._unread, callbackArgs=(request,),
                       errbackArgs=(request,))
        d.addErrback(self._failed, request)
        d.addCallback(respond)
        return NOT_DONE_YET

    @staticmethod
    def _unread(failure, request):
        failure.trap(S3Error, BodyIncomplete)
        # S3Error: the node's body budget refused to wait longer (SlowDown),
        # or the body came too slowly.
        request.setResponseCode(failure.value.status if failure.check(S3Error) else 400)
        return b""

    def _failed(self, failure, request):
        # Every request gets an answer, whatever went wrong.
        log.failure("RPC {op} failed", failure, op=self.op)
        request.setResponseCode(500)
        return b""

    def _answer(self, body, request):
        if body is None:
            request.setResponseCode(413)
            return b""
        cluster = self.rpc.cluster
        obj = open_json(cluster.rpc_sealer, body)
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
