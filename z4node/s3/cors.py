"""CORS: a bucket's CORS rules, matched against browsers' requests.

The rules live in the bucket's settings (``settings["cors"]``, a list of
rule dicts written by ``handlers.cors``). A browser asks first with an
unsigned ``OPTIONS`` preflight (answered by :func:`preflight`, before any
authentication); the actual request, signed or not, gets the CORS headers
of the first rule that allows it (:func:`decorate`). As in S3, the first
rule whose origin, method and (for a preflight) every requested header
match is the one that answers; origins and headers match with at most one
``*`` wildcard, headers case-insensitively.
"""

import re

from z4node.s3.errors import S3Error

METHODS = ("GET", "PUT", "HEAD", "POST", "DELETE")
# S3's limits on a CORS configuration.
MAX_RULES = 100
MAX_ID_LENGTH = 255


def _pattern(value, case_sensitive):
    """A compiled matcher for an origin or header with one ``*`` at most."""
    regex = "^" + ".*".join(re.escape(part) for part in value.split("*")) + "$"
    return re.compile(regex, 0 if case_sensitive else re.IGNORECASE)


class Rule:
    def __init__(self, value):
        self.id = value.get("id")
        self.origins = value["allowed_origins"]
        self.methods = value["allowed_methods"]
        self.headers = value.get("allowed_headers", [])
        self.expose = value.get("expose_headers", [])
        self.max_age = value.get("max_age")
        self._origin_patterns = [_pattern(o, True) for o in self.origins]
        self._header_patterns = [_pattern(h, False) for h in self.headers]

    def origin_matches(self, origin):
        return any(p.match(origin) for p in self._origin_patterns)

    def header_allowed(self, header):
        return any(p.match(header) for p in self._header_patterns)

    def allows(self, origin, method, headers=()):
        return (self.origin_matches(origin) and method in self.methods
                and all(self.header_allowed(h) for h in headers))

    def response_headers(self, origin):
        # A rule for any origin answers "*", and then with no credentials,
        # as S3 does; otherwise the origin itself, credentials allowed.
        wildcard = "*" in self.origins
        headers = {
            "access-control-allow-origin": "*" if wildcard else origin,
            "access-control-allow-methods": ", ".join(self.methods),
            "vary": "Origin, Access-Control-Request-Headers, Access-Control-Request-Method",
        }
        if not wildcard:
            headers["access-control-allow-credentials"] = "true"
        if self.expose:
            headers["access-control-expose-headers"] = ", ".join(self.expose)
        if self.max_age is not None:
            headers["access-control-max-age"] = str(self.max_age)
        return headers


def rules_of(bucket):
    if bucket is None:
        return []
    return [Rule(value) for value in bucket.settings.get("cors", [])]


def requested_headers(value):
    return [h.strip().lower() for h in (value or "").split(",") if h.strip()]


def preflight(bucket, headers):
    """The response headers for a preflight, or S3Error (400 or 403)."""
    origin = headers.get("origin")
    if not origin:
        raise S3Error("BadRequest", "Insufficient information. Origin request header needed.")
    method = headers.get("access-control-request-method")
    if method not in METHODS:
        raise S3Error("BadRequest", f"Invalid Access-Control-Request-Method: {method}")
    if bucket is None:
        raise S3Error("AccessForbidden", "CORSResponse: Bucket not found")
    rules = rules_of(bucket)
    if not rules:
        raise S3Error("AccessForbidden", "CORSResponse: CORS is not enabled for this bucket.")
    wanted = requested_headers(headers.get("access-control-request-headers"))
    for rule in rules:
        if rule.allows(origin, method, wanted):
            answer = rule.response_headers(origin)
            if wanted:
                answer["access-control-allow-headers"] = ", ".join(wanted)
            return answer
    raise S3Error("AccessForbidden")


def decorate(system, call, response):
    """Add the CORS headers of the first rule allowing an actual request
    (it carries ``Origin``) to its response; nothing if none does."""
    origin = call.headers.get("origin")
    if not origin or call.bucket is None:
        return
    for rule in rules_of(system.bucket(call.bucket)):
        if rule.allows(origin, call.method):
            response.headers.update(rule.response_headers(origin))
            return
