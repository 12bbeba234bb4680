"""Small helpers for the JSON resources under ``/_z4/``."""

import json

from twisted.internet.defer import maybeDeferred
from twisted.python.failure import Failure
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET


def write_json(request, obj, code=200):
    body = json.dumps(obj, indent=1, sort_keys=True).encode("utf-8") + b"\n"
    request.setResponseCode(code)
    request.setHeader(b"content-type", b"application/json")
    request.setHeader(b"cache-control", b"no-store")
    return body


class JSONResource(Resource):
    """A read-only leaf answering GET with :meth:`get` (a dict or a
    Deferred of one); :class:`HTTPError` sets the status."""

    isLeaf = True

    def get(self, request):
        raise NotImplementedError

    def render_GET(self, request):
        d = maybeDeferred(self.get, request)
        finished = []
        request.notifyFinish().addErrback(lambda _: finished.append(True))

        def respond(result):
            if isinstance(result, Failure):
                if result.check(HTTPError):
                    body = write_json(request, {"error": result.value.message},
                                      result.value.code)
                else:
                    body = write_json(request, {"error": "internal error"}, 500)
            else:
                body = write_json(request, result)
            if not finished:
                request.write(body)
                request.finish()

        d.addBoth(respond)
        return NOT_DONE_YET


class HTTPError(Exception):
    def __init__(self, code, message):
        super().__init__(message)
        self.code = code
        self.message = message
