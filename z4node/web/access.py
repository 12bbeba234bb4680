"""Who may read the detailed ``/_z4/`` views (members and their addresses,
the ring, provider lookups, counters): requests signed by an admin key,
checked by the S3 API's own authentication (SigV4 or SigV2, header or
presigned URL). ``/_z4/ping`` stays public as the liveness answer.

Owns the decision only; the keys are the node's system tables.
"""

from z4node.s3.auth import RequestView, authenticate
from z4node.s3.errors import S3Error
from z4node.web.json_resource import HTTPError


class AdminAccess:
    """``keys`` answers ``secret_for(access_key_id)`` and
    ``key_by_id(access_key_id)`` (the node's ``SystemTables``)."""

    def __init__(self, clock, keys):
        self.clock = clock
        self.keys = keys

    def check(self, request):
        """Return if ``request`` is signed by an admin key; else raise
        :class:`HTTPError` 403 saying why."""
        raw_path, _, raw_query = request.uri.partition(b"?")
        headers = {name.decode("latin-1").lower(): b",".join(values).decode("latin-1")
                   for name, values in request.requestHeaders.getAllRawHeaders()}
        view = RequestView(request.method.decode("ascii", "replace").upper(), raw_path,
                           raw_query, headers)
        try:
            credentials = authenticate(view, self.keys.secret_for, self.clock.seconds())
        except S3Error as e:
            raise HTTPError(403, f"{e.code}: {e.message}") from None
        if credentials is None:
            raise HTTPError(403, "this view needs a request signed by an admin key "
                                 "(z4 cluster ... signs with it)")
        key = self.keys.key_by_id(credentials.access_key_id)
        if key is None or not key.is_admin:
            raise HTTPError(403, "this view is for admin keys only")
