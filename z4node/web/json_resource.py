"""Small helpers for the resources under ``/_z4/``: the base class every one
of them derives from, and the read-only JSON leaf."""

import json

from twisted.internet.defer import maybeDeferred
from twisted.python.failure import Failure
from twisted.web.error import UnsupportedMethod
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET


def write_json(request, obj, code=200):
    body = json.dumps(obj, indent=1, sort_keys=True).encode("utf-8") + b"\n"
    request.setResponseCode(code)
    request.setHeader(b"content-type", b"application/json")
    request.setHeader(b"cache-control", b"no-store")
    return body


class Z4Resource(Resource):
    """A resource under ``/_z4/``.

    twisted.web's ``Resource`` answers HEAD by calling ``render_GET``, which
    a container (``/_z4/providers``) does not have: the AttributeError
    became a 500. Here HEAD is allowed only where
    GET is, and answered 405 elsewhere like any other method.
    """

    def render_HEAD(self, request):
        if not hasattr(self, "render_GET"):
            raise UnsupportedMethod(sorted(
                name[len("render_"):].encode("ascii") for name in dir(self)
                if name.startswith("render_") and name not in ("render_HEAD", "render")))
        return self.render_GET(request)


class JSONResource(Z4Resource):
    """A read-only leaf answering GET with :meth:`get` (a dict or a
    Deferred of one); :class:`HTTPError` sets the status.

    With ``access`` (a :class:`z4node.web.access.AdminAccess`), only
    requests signed by an admin key are answered; others get 403.
    """

    isLeaf = True

    def __init__(self, access=None):
        Resource.__init__(self)
        self.access = access

    def get(self, request):
        raise NotImplementedError

    def _checked_get(self, request):
        if self.access is not None:
            self.access.check(request)
        return self.get(request)

    def render_GET(self, request):
        d = maybeDeferred(self._checked_get, request)
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
