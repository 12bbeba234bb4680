"""The console's sessions, login and CSRF checks, in memory: the session
table on a fake clock, and the console resource through the node's own
S3Site (raw HTTP over a StringTransport), with a key store and no object layer (every request
here is refused or answered before one would be asked)."""

import re
from types import SimpleNamespace
from urllib.parse import urlencode

from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.logger import globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.http_headers import Headers
from twisted.web.resource import Resource

from z4node.s3 import authorization
from z4node.s3.api import S3Api
from z4node.s3.http import S3Site
from z4node.web.console import Console
from z4node.web.console_sessions import ConsoleSessions, check_secret, cookie_header
from z4node.web.status import new_z4_root

ADMIN = SimpleNamespace(access_key_id="AKIDCONSOLEADMIN", secret="admin-secret-42",
                        name="admin", is_admin=True)
USER = SimpleNamespace(access_key_id="AKIDCONSOLEUSER", secret="user-secret-42",
                       name="user", is_admin=False)


class Keys:
    """The key store methods the console asks (as SystemTables answers)."""

    def __init__(self, *keys):
        self.by_id = {k.access_key_id: k for k in keys}

    def key_by_id(self, access_key_id):
        return self.by_id.get(access_key_id)

    def secret_for(self, access_key_id):
        key = self.by_id.get(access_key_id)
        return None if key is None else key.secret


def counter_bytes():
    """Distinct, predictable "random" bytes."""
    state = [0]

    def random_bytes(n):
        state[0] += 1
        return state[0].to_bytes(n, "big")
    return random_bytes


class SessionTests(SynchronousTestCase):
    def setUp(self):
        self.clock = Clock()
        self.clock.advance(1_000)
        self.sessions = ConsoleSessions(self.clock, counter_bytes())

    def test_idle_session_expires(self):
        session = self.sessions.new("AKID")
        self.clock.advance(self.sessions.idle_seconds - 1)
        self.assertIs(self.sessions.get(session.id), session)
        # Used just now: its idle time starts again.
        self.clock.advance(self.sessions.idle_seconds - 1)
        self.assertIs(self.sessions.get(session.id), session)
        self.clock.advance(self.sessions.idle_seconds)
        self.assertIsNone(self.sessions.get(session.id))
        self.assertEqual(len(self.sessions), 0)

    def test_busy_session_ends_at_its_maximum_age(self):
        session = self.sessions.new("AKID")
        step = self.sessions.idle_seconds / 2
        while self.clock.seconds() + step < 1_000 + self.sessions.max_age_seconds:
            self.clock.advance(step)
            self.assertIs(self.sessions.get(session.id), session)
        self.clock.advance(step)
        self.assertIsNone(self.sessions.get(session.id))

    def test_log_in_gives_a_new_id_and_ends_the_anonymous_session(self):
        anonymous = self.sessions.new()
        logged_in = self.sessions.log_in(anonymous, "AKID")
        self.assertNotEqual(logged_in.id, anonymous.id)
        self.assertNotEqual(logged_in.csrf, anonymous.csrf)
        self.assertIsNone(self.sessions.get(anonymous.id))
        self.assertEqual(self.sessions.get(logged_in.id).access_key_id, "AKID")

    def test_table_is_bounded_least_recently_used_first(self):
        self.sessions.max_sessions = 3
        first, second, third = (self.sessions.new() for _ in range(3))
        self.sessions.get(first.id)
        self.sessions.new()
        self.assertIsNone(self.sessions.get(second.id))
        self.assertIs(self.sessions.get(first.id), first)
        self.assertIs(self.sessions.get(third.id), third)

    def test_csrf_token(self):
        session = self.sessions.new()
        self.assertTrue(session.csrf_matches(session.csrf))
        for wrong in (None, "", session.csrf[:-1], session.id, "é" * 10):
            self.assertFalse(session.csrf_matches(wrong), wrong)

    def test_ids_and_tokens_are_256_random_bits(self):
        session = ConsoleSessions(self.clock).new()
        self.assertRegex(session.id, r"^[A-Za-z0-9_-]{43}$")
        self.assertRegex(session.csrf, r"^[A-Za-z0-9_-]{43}$")

    def test_check_secret(self):
        keys = Keys(ADMIN, USER)
        self.assertIs(check_secret(keys, USER.access_key_id, USER.secret), USER)
        self.assertIsNone(check_secret(keys, USER.access_key_id, ADMIN.secret))
        self.assertIsNone(check_secret(keys, USER.access_key_id, ""))
        self.assertIsNone(check_secret(keys, "AKIDNOSUCHKEY", USER.secret))

    def test_cookie_attributes(self):
        session = self.sessions.new()
        plain = cookie_header(session, secure=False).split(b"; ")
        self.assertEqual(plain[0], b"z4console=" + session.id.encode())
        self.assertIn(b"HttpOnly", plain)
        self.assertIn(b"SameSite=Strict", plain)
        self.assertIn(b"Path=/_z4/console", plain)
        self.assertNotIn(b"Secure", plain)
        self.assertIn(b"Secure", cookie_header(session, secure=True).split(b"; "))
        self.assertIn(b"Max-Age=0", cookie_header(None, secure=False).split(b"; "))


class ConsoleLoginTests(SynchronousTestCase):
    """Login, logout and the CSRF checks of the console resource."""

    def setUp(self):
        self.clock = Clock()
        self.clock.advance(1_700_000_000)
        self.sessions = ConsoleSessions(self.clock)
        self.s3_asked = []

        async def authorize(api, call):
            self.s3_asked.append(call.operation)
        self.patch(authorization, "authorize", authorize)
        # StringTransport's peer is this proxy.
        api = S3Api(self.clock, SimpleNamespace(system=Keys(ADMIN, USER)), {}, None,
                    trusted_proxies={"192.168.1.1"})
        self.console = Console(self.clock, api, None, {"id": "node-1", "started": 0}, None,
                               sessions=self.sessions)
        z4 = new_z4_root()
        z4.putChild(b"console", self.console)
        root = Resource()
        root.putChild(b"_z4", z4)
        self.site = S3Site(root, reactor=self.clock, timeout=None)
        self.events = []
        globalLogPublisher.addObserver(self.events.append)
        self.addCleanup(globalLogPublisher.removeObserver, self.events.append)

    def request(self, method, path, cookie=None, form=None, headers=None, data=b""):
        """(status, headers, body) of a request to the console, sent as raw
        HTTP (a client's cookie jar would send cookies of its own)."""
        headers = dict(headers or {})
        if cookie is not None:
            headers[b"cookie"] = b"z4console=" + cookie.encode()
        if form is not None:
            headers[b"content-type"] = b"application/x-www-form-urlencoded"
            data = urlencode(form).encode()
        lines = [f"{method} /_z4/console{path} HTTP/1.1".encode(), b"Host: 127.0.0.1",
                 b"Content-Length: %d" % len(data)]
        lines += [name + b": " + value for name, value in headers.items()]
        transport = StringTransport()
        protocol = self.site.buildProtocol(None)
        protocol.makeConnection(transport)
        protocol.dataReceived(b"\r\n".join(lines) + b"\r\n\r\n" + data)
        head, _, body = transport.value().partition(b"\r\n\r\n")
        status_line, *header_lines = head.split(b"\r\n")
        answer = Headers()
        for line in header_lines:
            name, _, value = line.partition(b": ")
            answer.addRawHeader(name, value)
        return int(status_line.split()[1]), answer, body

    def login_form(self):
        """(anonymous session id, its CSRF token) from the login page."""
        status, headers, body = self.request("GET", "/login")
        self.assertEqual(status, 200)
        cookie = headers.getRawHeaders(b"set-cookie")[0]
        session_id = re.match(rb"z4console=([^;]+);", cookie).group(1).decode()
        token = re.search(rb'name="csrf" value="([^"]+)"', body).group(1).decode()
        return session_id, token

    def log_in(self, key=ADMIN):
        anonymous, token = self.login_form()
        status, headers, _ = self.request("POST", "/login", anonymous, {
            "csrf": token, "access_key": key.access_key_id, "secret": key.secret})
        self.assertEqual(status, 303)
        cookie = headers.getRawHeaders(b"set-cookie")[0]
        self.assertIn(b"HttpOnly", cookie)
        self.assertIn(b"SameSite=Strict", cookie)
        session_id = re.match(rb"z4console=([^;]+);", cookie).group(1).decode()
        return session_id, self.sessions.get(session_id).csrf

    def test_pages_redirect_to_login_without_a_session(self):
        for path in ("/", "/cluster", "/buckets", "/keys"):
            status, headers, _ = self.request("GET", path)
            self.assertEqual(status, 303, path)
            self.assertEqual(headers.getRawHeaders(b"location"), [b"/_z4/console/login"])

    def test_login_and_logout(self):
        anonymous, _ = self.login_form()
        session_id, token = self.log_in()
        self.assertNotEqual(session_id, anonymous)
        status, headers, _ = self.request("GET", "/", session_id)
        self.assertEqual(headers.getRawHeaders(b"location"), [b"/_z4/console/cluster"])
        # Logging out needs the token too: another site cannot log you out.
        status, _, body = self.request("POST", "/logout", session_id, {"csrf": "forged"})
        self.assertEqual(status, 403)
        self.assertIn(b"InvalidCsrfToken", body)
        status, headers, _ = self.request("POST", "/logout", session_id, {"csrf": token})
        self.assertEqual(status, 303)
        self.assertIn(b"Max-Age=0", headers.getRawHeaders(b"set-cookie")[0])
        status, headers, _ = self.request("GET", "/keys", session_id)
        self.assertEqual(headers.getRawHeaders(b"location"), [b"/_z4/console/login"])

    def test_wrong_secret_is_refused_and_not_logged(self):
        anonymous, token = self.login_form()
        status, headers, body = self.request("POST", "/login", anonymous, {
            "csrf": token, "access_key": ADMIN.access_key_id, "secret": "guessed-secret"})
        self.assertEqual(status, 403)
        self.assertIn(b"Wrong access key id or secret key", body)
        # The same anonymous session, for another try.
        self.assertTrue(headers.getRawHeaders(b"set-cookie")[0].startswith(
            b"z4console=" + anonymous.encode() + b";"))
        self.assertIsNone(self.sessions.get(anonymous).access_key_id)
        # A secret typed into the id field does not reach the log either.
        self.request("POST", "/login", anonymous, {
            "csrf": token, "access_key": USER.secret, "secret": "x"})
        self.log_in()
        text = repr(self.events)
        for secret in ("guessed-secret", USER.secret, ADMIN.secret):
            self.assertNotIn(secret, text)
        self.assertIn("logged in", text)

    def test_login_needs_the_login_forms_token(self):
        anonymous, token = self.login_form()
        credentials = {"access_key": ADMIN.access_key_id, "secret": ADMIN.secret}
        # Another site's form: no session cookie (SameSite), or no token.
        status, _, body = self.request("POST", "/login", None, dict(credentials, csrf=token))
        self.assertEqual(status, 403)
        self.assertIn(b"login form expired", body)
        status, _, body = self.request("POST", "/login", anonymous, credentials)
        self.assertEqual(status, 403)
        self.assertIn(b"InvalidCsrfToken", body)
        self.assertIsNone(self.sessions.get(anonymous).access_key_id)

    def test_cookie_is_secure_when_the_browser_came_over_tls(self):
        # Through a --trusted-proxy that terminated TLS, as the S3 API
        # believes it for aws:SecureTransport.
        _, headers, _ = self.request("GET", "/login", headers={b"x-forwarded-proto": b"https"})
        self.assertIn(b"Secure", headers.getRawHeaders(b"set-cookie")[0].split(b"; "))
        _, headers, _ = self.request("GET", "/login")
        self.assertNotIn(b"Secure", headers.getRawHeaders(b"set-cookie")[0].split(b"; "))

    def test_session_expires_on_the_clock(self):
        session_id, _ = self.log_in()
        self.clock.advance(self.sessions.idle_seconds + 1)
        status, headers, _ = self.request("GET", "/buckets", session_id)
        self.assertEqual(headers.getRawHeaders(b"location"), [b"/_z4/console/login"])

    def test_state_changes_need_the_token(self):
        session_id, token = self.log_in()
        for path in ("/keys/create", "/keys/delete", "/grants", "/delete/photos"):
            status, _, body = self.request("POST", path, session_id,
                                           {"csrf": "x" + token, "name": "k", "key": "a"})
            self.assertEqual(status, 403, path)
            self.assertIn(b"InvalidCsrfToken", body)
        # The upload is refused on its headers, before the S3 layer is asked.
        status, _, body = self.request("PUT", "/object/photos?key=a", session_id,
                                       data=b"x" * 1000)
        self.assertEqual(status, 403)
        self.assertIn(b"InvalidCsrfToken", body)
        status, _, _ = self.request("PUT", "/object/photos?key=a", session_id,
                                    headers={b"x-z4-csrf": b"wrong"}, data=b"x")
        self.assertEqual(status, 403)
        self.assertEqual(self.s3_asked, [])
        # Another user's token is no good either.
        _, other = self.log_in(USER)
        status, _, _ = self.request("POST", "/keys/create", session_id,
                                    {"csrf": other, "name": "k"})
        self.assertEqual(status, 403)

    def test_not_logged_in_state_changes_are_refused(self):
        status, _, body = self.request("PUT", "/object/photos?key=a", data=b"x")
        self.assertEqual(status, 403)
        self.assertIn(b"NotLoggedIn", body)

    def test_admin_only_pages(self):
        session_id, token = self.log_in(USER)
        status, _, body = self.request("GET", "/cluster", session_id)
        self.assertEqual(status, 403)
        self.assertIn(b"for admin keys only", body)
        status, _, body = self.request("POST", "/keys/create", session_id,
                                       {"csrf": token, "name": "mine"})
        self.assertEqual(status, 403)
        self.assertIn(b"for admin keys only", body)

    def test_bad_requests_get_error_pages(self):
        session_id, token = self.log_in()
        cases = [("GET", "/nowhere", {}, 404), ("DELETE", "/keys", {}, 405),
                 ("GET", "/%ff", {}, 400), ("GET", "/cluster/more", {}, 404),
                 ("GET", "/buckets/a%2Fb", {}, 400), ("GET", "/object/a%2F..?key=k", {}, 400),
                 ("POST", "/grants", {"csrf": token, "change": "maybe"}, 400)]
        for method, path, form, expected in cases:
            status, headers, body = self.request(method, path, session_id, form or None)
            self.assertEqual(status, expected, (method, path, body))
            self.assertIn(b'id="error-code"', body)
            self.assertEqual(headers.getRawHeaders(b"content-type"),
                             [b"text/html; charset=utf-8"])
        # A form that is not a form.
        status, _, body = self.request("POST", "/grants", session_id,
                                       headers={b"content-type": b"text/plain"},
                                       data=b"csrf=" + token.encode())
        self.assertEqual(status, 415)

    def test_answers_forbid_framing_and_foreign_scripts(self):
        _, headers, _ = self.request("GET", "/login")
        policy = headers.getRawHeaders(b"content-security-policy")[0]
        self.assertIn(b"script-src 'self'", policy)
        self.assertIn(b"frame-ancestors 'none'", policy)
        self.assertEqual(headers.getRawHeaders(b"cache-control"), [b"no-store"])
        status, headers, body = self.request("GET", "/static/console.js")
        self.assertEqual(status, 200)
        self.assertIn(b"XMLHttpRequest", body)
