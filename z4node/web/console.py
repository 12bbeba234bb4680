"""The console: a web page in every node, at ``/_z4/console`` on the S3
port, for a person with an access key and a browser.

Owns the console's routes, its login and logout, and what each page asks
of the node. Sessions and their cookie are :mod:`.console_sessions`; the
HTML is :mod:`.console_pages`; the little JavaScript (uploads with a
progress bar) and the style sheet are ``console.js`` and ``console.css``
beside this module, served by the node itself.

Nothing here decides who may do what. What the console does with objects
it does as an S3 request of the logged-in key: it builds the S3 call
(:class:`~z4node.s3.api.S3Call`), routes it with the S3 router and asks
:func:`z4node.s3.authorization.authorize`, as every S3 request does, then
runs the S3 handler (PutObject streams the browser's body into the object
layer as an S3 PUT does; GetObject streams the download) or, for a
listing, the object layer's listing that the handler would format as XML.
Key and grant changes are the admin socket's own commands
(:class:`~z4node.admin.commands.AdminCommands`), for admin keys only, as
the cluster view is (it shows what the admin-only ``/_z4/peers``,
``/_z4/ring`` and ``/_z4/status`` show, from the same functions).

Every state-changing request (POST, and the upload's PUT) must carry the
session's CSRF token, the login form's included. Failures are pages that
say what went wrong, with the S3 error code where there is one.
"""

import json
import os
from urllib.parse import quote

from twisted.internet.defer import Deferred
from twisted.logger import Logger
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET

from z4node.objects.errors import ObjectError
from z4node.objects.system import AdminError
from z4node.s3 import authorization, router
from z4node.s3.api import S3Call, object_error
from z4node.s3.errors import S3Error
from z4node.s3.handlers import HANDLERS
from z4node.s3.http import BodyIncomplete
from z4node.web import console_pages as pages
from z4node.web.console_sessions import (COOKIE_NAME, CSRF_FIELD, CSRF_HEADER,
                                         ConsoleSessions, check_secret, cookie_header)
from z4node.web.status import peers_view, status_view

log = Logger()

# Sent with every console answer: the page loads nothing but the node's own
# script and style sheet, runs no inline script, and is never framed (no
# clickjacking of its buttons).
SECURITY_HEADERS = {
    b"content-security-policy": b"default-src 'none'; script-src 'self'; "
                                b"style-src 'self'; img-src 'self'; connect-src 'self'; "
                                b"form-action 'self'; frame-ancestors 'none'; "
                                b"base-uri 'none'",
    b"x-frame-options": b"DENY",
    b"x-content-type-options": b"nosniff",
    b"referrer-policy": b"same-origin",
    b"cache-control": b"no-store",
}
STATIC = {"console.js": b"text/javascript; charset=utf-8",
          "console.css": b"text/css; charset=utf-8"}
# Request headers an S3 call made for the console carries: what the object
# layer needs of an upload, what bucket policy conditions may test, and a
# trusted proxy's word that the browser came over TLS.
PASSED_HEADERS = ("content-type", "content-length", "user-agent", "referer",
                  "x-forwarded-proto")


class ConsoleError(Exception):
    """A request the console refuses; shown as an error page."""

    def __init__(self, status, code, message):
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


def _no_such_page():
    return ConsoleError(404, "NotFound", "The console has no such page.")


def _no_more(rest):
    """Refuse a path that goes on past a page that has no sub-pages."""
    if rest:
        raise _no_such_page()


def _not_logged_in():
    return ConsoleError(403, "NotLoggedIn", "Log in first (your session may have "
                                            "expired).")


def passed_headers(request):
    """The request's :data:`PASSED_HEADERS` as the S3 pipeline reads
    headers (lower-case names, wire strings)."""
    headers = {}
    for name in PASSED_HEADERS:
        value = request.requestHeaders.getRawHeaders(name.encode("ascii"))
        if value:
            headers[name] = value[0].decode("latin-1")
    return headers


def session_id_of(request):
    """The console cookie's value, or None. (The node's requests skip
    twisted.web's cookie parsing, which the S3 API has no use for.)"""
    for header in request.requestHeaders.getRawHeaders(b"cookie") or ():
        for part in header.split(b";"):
            name, _, value = part.strip().partition(b"=")
            if name == COOKIE_NAME and value:
                return value.decode("ascii", "replace")
    return None


class Console(Resource):
    """``/_z4/console``: a leaf that routes on the rest of the path.

    ``api`` is the node's :class:`~z4node.s3.api.S3Api` (its object layer
    and key store), ``admin`` its ``AdminCommands``, ``node_info`` and
    ``cluster`` what :func:`~z4node.web.status.make_z4_resource` gets.
    """

    isLeaf = True
    # Keys (and folders) on one page of the bucket browser.
    page_keys = 100
    # A console form (login, key names, grants) is a few hundred bytes.
    max_form_bytes = 16 * 1024
    # The cluster view reloads itself this often: SWIM declares a silent
    # node dead within seconds, and an operator watching should see it.
    cluster_refresh_seconds = 5

    def __init__(self, clock, api, admin, node_info, cluster, sessions=None):
        super().__init__()
        self.clock = clock
        self.api = api
        self.system = api.system
        self.admin = admin
        self.node_info = node_info
        self.cluster = cluster
        self.sessions = sessions if sessions is not None else ConsoleSessions(clock)
        here = os.path.dirname(os.path.abspath(__file__))
        self.static = {}
        for name in STATIC:
            with open(os.path.join(here, name), "rb") as f:
                self.static[name] = f.read()
        self.pages = {
            ("GET", "cluster"): self.cluster_view,
            ("GET", "buckets"): self.buckets_view,
            ("GET", "object"): self.download,
            ("PUT", "object"): self.upload,
            ("POST", "delete"): self.delete,
            ("GET", "versions"): self.versions_view,
            ("GET", "keys"): self.keys_view,
            ("POST", "keys"): self.change_keys,
            ("POST", "grants"): self.change_grant,
            ("POST", "logout"): self.logout,
        }

    def render(self, request):
        Deferred.fromCoroutine(self._answer(request)).addErrback(self._unanswered, request)
        return NOT_DONE_YET

    @staticmethod
    def _unanswered(failure, request):
        log.failure("console request left unanswered", failure)
        if not request.gone:
            request.channel.transport.abortConnection()

    async def _answer(self, request):
        try:
            await self._route(request)
            return
        except ConsoleError as e:
            status, code, message = e.status, e.code, e.message
        except ObjectError as e:
            e = object_error(e)
            status, code, message = e.status, e.code, e.message
        except S3Error as e:
            status, code, message = e.status, e.code, e.message
        except AdminError as e:
            status, code, message = 400, "Refused", str(e)
        except BodyIncomplete:
            if request.gone:
                return
            status, code, message = 400, "IncompleteBody", "The request body ended early."
        except Exception:
            log.failure("console {method} {path} failed", method=request.method,
                        path=request.path)
            status, code, message = 500, "InternalError", (
                "The node failed to answer; its log says why.")
        if request.gone or request.startedWriting:
            if request.startedWriting and not request.finished and not request.gone:
                request.channel.transport.abortConnection()
            return
        self._send_html(request, status, pages.error_page(
            status, code, message, self._who_from(request)))

    def _who_from(self, request):
        """The navigation for an error page: the logged-in key, if any."""
        session = self.sessions.get(session_id_of(request) or "")
        key = self._key_of(session)
        return None if key is None else (key.name, key.is_admin, session.csrf)

    def _key_of(self, session):
        if session is None or session.access_key_id is None:
            return None
        # Looked up each time: a deleted key's sessions end at once.
        return self.system.key_by_id(session.access_key_id)

    async def _route(self, request):
        method = request.method.decode("ascii", "replace").upper()
        if method == "HEAD":
            method = "GET"
        try:
            segments = [s.decode("utf-8") for s in request.postpath]
            query = router.query_parameters(request.uri.partition(b"?")[2].decode("utf-8"))
        except UnicodeDecodeError:
            raise ConsoleError(400, "InvalidURI", "The address is not UTF-8.") from None
        while segments and segments[-1] == "":
            segments.pop()
        name, rest = (segments[0], segments[1:]) if segments else ("", [])
        if name == "static" and method == "GET" and len(rest) == 1 and rest[0] in STATIC:
            self._send(request, 200, STATIC[rest[0]], self.static[rest[0]],
                       cache=b"max-age=300")
            return
        session = self.sessions.get(session_id_of(request) or "")
        if name == "login":
            _no_more(rest)
            await self._login(request, method, session)
            return
        key = self._key_of(session)
        handler = self.pages.get((method, name))
        if handler is None:
            if name == "" and method == "GET":
                self._redirect(request, pages.url(
                    "/cluster" if key is not None and key.is_admin
                    else "/buckets" if key is not None else "/login"))
                return
            if any(page == name for _, page in self.pages):
                raise ConsoleError(405, "MethodNotAllowed",
                                   f"{method} is not allowed here.")
            raise _no_such_page()
        if key is None:
            if method == "GET":
                self._redirect(request, pages.url("/login"))
                return
            raise _not_logged_in()
        await handler(request, session, key, rest, query)

    # -- login and logout ------------------------------------------------------

    async def _login(self, request, method, session):
        if method == "GET":
            if self._key_of(session) is not None:
                self._redirect(request, pages.url("/"))
                return
            self._login_form(request, 200, session)
            return
        if method != "POST":
            raise ConsoleError(405, "MethodNotAllowed", f"{method} is not allowed here.")
        if session is None:
            self._login_form(request, 403, None,
                             "The login form expired; log in again.")
            return
        form = await self._form(request, session)
        key = check_secret(self.system, form.get("access_key", "").strip(),
                           form.get("secret", ""))
        address = getattr(request.getClientAddress(), "host", None)
        if key is None:
            # The id given is not logged: a secret pasted into the wrong
            # field would land in the log.
            log.info("console: login refused from {address}", address=address)
            self._login_form(request, 403, session, "Wrong access key id or secret key.")
            return
        new = self.sessions.log_in(session, key.access_key_id)
        log.info("console: key {name} ({id}) logged in from {address}", name=key.name,
                 id=key.access_key_id, address=address)
        self._redirect(request, pages.url("/"), new)

    def _login_form(self, request, status, session, message=None):
        """The login page, with a new anonymous session unless ``session``
        is one (its token protects the login form itself)."""
        if session is None or session.access_key_id is not None:
            session = self.sessions.new()
        self._send_html(request, status, pages.login_page(session.csrf, message),
                        cookie=session)

    async def logout(self, request, session, key, rest, query):
        _no_more(rest)
        await self._form(request, session)
        self.sessions.end(session.id)
        self._send(request, 303, b"text/plain", b"", location=pages.url("/login"),
                   cookie_value=cookie_header(None, self._secure(request)))

    # -- the cluster -----------------------------------------------------------

    async def cluster_view(self, request, session, key, rest, query):
        _no_more(rest)
        self._require_admin(key, "The cluster view")
        peers = peers_view(self.clock, self.node_info, self.cluster)
        status = status_view(self.clock, self.node_info, self.cluster)
        self._send_html(request, 200, pages.cluster_page(
            self._who(key, session), peers, self.cluster.ring.summary(), status,
            self.cluster_refresh_seconds))

    # -- buckets and objects -----------------------------------------------------

    async def buckets_view(self, request, session, key, rest, query):
        if rest:
            await self.browser_view(request, session, key, rest, query)
            return
        await self._s3(request, key, "GET", "ListBuckets")
        names = self.system.user_names()
        # Which buckets ListBuckets shows this key.
        buckets = [{"name": b.name, "owner": names.get(b.owner, b.owner),
                    "created": b.created} for b in self.system.buckets()
                   if authorization.can_see_bucket(self.system, key, b.name)]
        self._send_html(request, 200, pages.buckets_page(self._who(key, session), buckets))

    async def browser_view(self, request, session, key, rest, query):
        bucket = self._bucket(rest)
        prefix = query.get("prefix", "")
        after = query.get("after") or None
        await self._s3(request, key, "GET", "ListObjectsV2", bucket,
                       query={"list-type": "2", "prefix": prefix, "delimiter": "/",
                              "max-keys": str(self.page_keys)})
        items, truncated = await self.api.objects.list_objects(bucket, prefix, "/", after,
                                                               self.page_keys)
        next_after = None
        if truncated and items:
            last = items[-1]
            next_after = last if isinstance(last, str) else last.key
        self._send_html(request, 200, pages.browser_page(
            self._who(key, session), bucket, prefix, items, next_after))

    async def versions_view(self, request, session, key, rest, query):
        bucket = self._bucket(rest)
        object_key = self._object_key(query)
        key_marker = query.get("marker") or None
        version_marker = query.get("version_marker") or None
        await self._s3(request, key, "GET", "ListObjectVersions", bucket,
                       query={"versions": "", "prefix": object_key,
                              "max-keys": str(self.page_keys)})
        items, truncated = await self.api.objects.list_versions(
            bucket, object_key, "", key_marker, version_marker, self.page_keys)
        # The prefix also matches longer keys ("a" lists "a/b"): only this one.
        versions = [item for item in items
                    if not isinstance(item, str) and item[0].key == object_key]
        more = None
        if truncated and versions and items[-1][0].key == object_key:
            more = pages.url("/versions/" + quote(bucket, safe=""), key=object_key,
                             marker=object_key, version_marker=versions[-1][0].version_id)
        self._send_html(request, 200, pages.versions_page(
            self._who(key, session), bucket, object_key, versions, more))

    async def download(self, request, session, key, rest, query):
        bucket = self._bucket(rest)
        object_key = self._object_key(query)
        s3_query = {}
        if query.get("version"):
            s3_query["versionId"] = query["version"]
        # Always a download, never a page of the console's origin: an
        # uploaded HTML file must not run as the console.
        s3_query["response-content-disposition"] = (
            "attachment; filename*=UTF-8''" + quote(object_key.rpartition("/")[2], safe=""))
        call = await self._s3(request, key, "GET", "GetObject", bucket, object_key,
                              query=s3_query)
        response = await HANDLERS[call.operation](self.api, call)
        response.headers["content-security-policy"] = "sandbox"
        response.headers["x-content-type-options"] = "nosniff"
        await self.api.send(request, call.request_id, response)

    async def upload(self, request, session, key, rest, query):
        # On the headers, before a byte of the body is read.
        token = request.getHeader(CSRF_HEADER)
        self._check_csrf(session, None if token is None else token.decode("latin-1"))
        bucket = self._bucket(rest)
        object_key = self._object_key(query)
        call = await self._s3(request, key, "PUT", "PutObject", bucket, object_key)
        response = await HANDLERS[call.operation](self.api, call)
        self._send(request, 200, b"application/json", json.dumps({
            "key": object_key, "etag": response.headers.get("etag"),
            "version_id": response.headers.get("x-amz-version-id")}).encode("utf-8"))

    async def delete(self, request, session, key, rest, query):
        form = await self._form(request, session)
        bucket = self._bucket(rest)
        object_key = self._object_key(form)
        s3_query = {"versionId": form["version"]} if form.get("version") else {}
        call = await self._s3(request, key, "DELETE", "DeleteObject", bucket, object_key,
                              query=s3_query)
        await HANDLERS[call.operation](self.api, call)
        folder = object_key.rpartition("/")[0]
        self._redirect(request, pages.url("/buckets/" + quote(bucket, safe=""),
                                          prefix=folder + "/" if folder else None))

    # -- keys and grants -----------------------------------------------------------

    async def keys_view(self, request, session, key, rest, query, created=None):
        _no_more(rest)
        who = self._who(key, session)
        if not key.is_admin:
            info = await self.admin.run("key.info", {"name": key.name})
            self._send_html(request, 200, pages.own_key_page(who, info))
            return
        self._send_html(request, 200, pages.keys_page(
            who, self.system.keys(),
            lambda k: self.system.grants_of_key(k.access_key_id),
            [b.name for b in self.system.buckets()], created))

    async def change_keys(self, request, session, key, rest, query):
        form = await self._form(request, session)
        self._require_admin(key, "Managing keys")
        name = form.get("name", "").strip()
        if rest == ["create"]:
            made = await self.admin.run("key.create", {"name": name})
            log.info("console: key {by} created key {name}", by=key.name, name=name)
            await self.keys_view(request, session, key, [], query, created=(
                made["name"], made["access_key_id"], made["secret_access_key"]))
            return
        if rest != ["delete"]:
            raise _no_such_page()
        if name == key.name:
            raise ConsoleError(400, "Refused", "A key cannot delete itself here; log in "
                                               "with another admin key.")
        await self.admin.run("key.delete", {"name": name})
        log.info("console: key {by} deleted key {name}", by=key.name, name=name)
        self._redirect(request, pages.url("/keys"))

    async def change_grant(self, request, session, key, rest, query):
        _no_more(rest)
        form = await self._form(request, session)
        self._require_admin(key, "Setting grants")
        change = form.get("change")
        if change not in ("allow", "deny"):
            raise ConsoleError(400, "InvalidArgument", "change must be allow or deny.")
        await self.admin.run("bucket." + change, {
            "bucket": form.get("bucket", ""), "key": form.get("key", ""),
            **{level: level in form for level in ("read", "write", "owner")}})
        self._redirect(request, pages.url("/keys"))

    # -- S3 calls ----------------------------------------------------------------

    async def _s3(self, request, key, method, operation, bucket=None, object_key=None,
                  query=None):
        """The S3 call doing ``operation`` as ``key``, authorized as the S3
        API authorizes that request; AccessDenied (S3Error) if refused."""
        raw_path = "/"
        if bucket is not None:
            raw_path += quote(bucket, safe="")
            if object_key is not None:
                raw_path += "/" + quote(object_key, safe="")
        raw_path = raw_path.encode("ascii")
        query = dict(query or {})
        headers = passed_headers(request)
        call = S3Call(request, self.api.new_request_id(), method, raw_path, query, headers)
        call.signed_headers = headers
        call.bucket, call.key = router.decode_path(raw_path)
        endpoint = router.route(method, call.bucket, call.key, query, headers)
        if endpoint.operation != operation:
            # The console asks only for what it means to; this is a bug.
            raise RuntimeError(f"console asked for {operation}, routed to "
                               f"{endpoint.operation}")
        call.operation = operation
        call.access_key = key
        call.secure = self.api.is_secure(request, headers)
        await authorization.authorize(self.api, call)
        return call

    @staticmethod
    def _bucket(rest):
        if len(rest) != 1 or not rest[0]:
            raise _no_such_page()
        if "/" in rest[0]:
            # An escaped slash ("a%2Fb"): no bucket name has one.
            raise S3Error("InvalidBucketName")
        return rest[0]

    @staticmethod
    def _object_key(values):
        object_key = values.get("key", "")
        if not object_key:
            raise ConsoleError(400, "InvalidArgument", "Name an object key.")
        return object_key

    # -- requests and answers ------------------------------------------------------

    def _secure(self, request):
        """Whether the browser came over TLS (for the cookie's Secure), as
        the S3 API decides it for aws:SecureTransport."""
        return self.api.is_secure(request, passed_headers(request))

    @staticmethod
    def _who(key, session):
        return (key.name, key.is_admin, session.csrf)

    @staticmethod
    def _require_admin(key, what):
        if not key.is_admin:
            raise ConsoleError(403, "AccessDenied", f"{what} is for admin keys only.")

    def _check_csrf(self, session, token):
        if session is None or not session.csrf_matches(token):
            raise ConsoleError(403, "InvalidCsrfToken",
                               "This form is not from your console session (or the "
                               "session expired); reload the page and try again.")

    async def _form(self, request, session):
        """A POSTed form's fields, once its CSRF token is checked."""
        content_type = (request.getHeader(b"content-type") or b"").split(b";")[0]
        if content_type.strip().lower() != b"application/x-www-form-urlencoded":
            raise ConsoleError(415, "UnsupportedMediaType",
                               "The console takes forms as application/x-www-form-urlencoded.")
        body = await request.body.read_all(self.max_form_bytes)
        if body is None:
            raise ConsoleError(413, "EntityTooLarge", "The form is too large.")
        try:
            form = router.query_parameters(body.decode("utf-8"))
        except UnicodeDecodeError:
            raise ConsoleError(400, "InvalidArgument", "The form is not UTF-8.") from None
        self._check_csrf(session, form.get(CSRF_FIELD))
        return form

    def _redirect(self, request, location, session=None):
        """303 to ``location`` (a console URL); with ``session``, the
        cookie that hands it over."""
        cookie = None if session is None else cookie_header(session, self._secure(request))
        self._send(request, 303, b"text/plain", b"", location=location, cookie_value=cookie)

    def _send_html(self, request, status, text, cookie=None):
        value = None if cookie is None else cookie_header(cookie, self._secure(request))
        self._send(request, status, b"text/html; charset=utf-8", text.encode("utf-8"),
                   cookie_value=value)

    @staticmethod
    def _send(request, status, content_type, body, location=None, cookie_value=None,
              cache=None):
        if request.gone:
            return
        request.setResponseCode(status)
        for name, value in SECURITY_HEADERS.items():
            request.setHeader(name, value)
        if cache is not None:
            request.setHeader(b"cache-control", cache)
        request.setHeader(b"content-type", content_type)
        request.setHeader(b"content-length", str(len(body)).encode("ascii"))
        if location is not None:
            request.setHeader(b"location", location.encode("utf-8"))
        if cookie_value is not None:
            request.responseHeaders.addRawHeader(b"set-cookie", cookie_value)
        request.write(body)
        request.finish()
