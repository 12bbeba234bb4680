"""Read-only JSON status endpoints under ``/_z4/``: never a secret."""

import json

from twisted.web.resource import Resource

from z4node import __version__


def json_response(request, document, status=200):
    request.setResponseCode(status)
    request.setHeader(b"content-type", b"application/json")
    request.setHeader(b"cache-control", b"no-store")
    return json.dumps(document, sort_keys=True).encode("utf-8") + b"\n"


class PingResource(Resource):
    """``GET /_z4/ping``: this node's id, version and uptime."""

    isLeaf = True

    def __init__(self, node):
        super().__init__()
        self._node = node

    def render_GET(self, request):
        return json_response(request, {
            "id": self._node.node_id,
            "version": __version__,
            "uptime": round(self._node.reactor.seconds() - self._node.started_at, 3),
        })
