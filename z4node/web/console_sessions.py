"""Sessions of the console (``/_z4/console``): who is logged in, until
when, and the token each session's forms must carry.

Owns the session table (in this node's memory: a session is good on the
node that made it, and a restart logs everyone out), the login check and
the cookie's attributes. Shows no secrets and logs none. Who may do what
once logged in is decided by ``z4node.s3.authorization``, not here.

A session starts anonymous (the login form's, so that the login itself
is protected against cross-site requests: its form carries the session's
token) and is replaced by a new one, with a new id, when its holder logs
in: an id an attacker planted before the login is worth nothing after it.
"""

import base64
import hmac
import os
from collections import OrderedDict
from dataclasses import dataclass

COOKIE_NAME = b"z4console"
COOKIE_PATH = b"/_z4/console"
# The form field and the request header that carry a session's token.
CSRF_FIELD = "csrf"
CSRF_HEADER = b"x-z4-csrf"


def random_token(random_bytes):
    """256 random bits, URL-safe text."""
    return base64.urlsafe_b64encode(random_bytes(32)).rstrip(b"=").decode("ascii")


def check_secret(keys, access_key_id, secret):
    """The access key if ``secret`` is its secret, else None. ``keys`` is
    the node's key store (``SystemTables``): the secret is looked up as the
    S3 signature check looks it up (``secret_for``), and compared in
    constant time."""
    expected = keys.secret_for(access_key_id)
    if expected is None or not hmac.compare_digest(expected.encode("utf-8"),
                                                   secret.encode("utf-8")):
        return None
    return keys.key_by_id(access_key_id)


@dataclass
class Session:
    id: str
    # None until its holder logs in (the login form's session).
    access_key_id: str | None
    csrf: str
    created: float
    last_used: float

    def csrf_matches(self, token):
        return token is not None and hmac.compare_digest(self.csrf.encode("ascii"),
                                                         token.encode("utf-8", "replace"))


class ConsoleSessions:
    """The sessions of one node, expiring on ``clock``'s time."""

    # A session unused this long is over, so an unattended browser is
    # logged out within half an hour.
    idle_seconds = 30 * 60
    # However busy, a session lasts a working day at most; then log in again.
    max_age_seconds = 12 * 3600
    # Anonymous (login form) sessions are cheap to make; the table is
    # bounded, the least recently used dropped first. 10,000 sessions of
    # ~300 bytes each hold 3 MB.
    max_sessions = 10_000

    def __init__(self, clock, random_bytes=os.urandom):
        self.clock = clock
        self.random_bytes = random_bytes
        self._sessions = OrderedDict()  # id -> Session, least recently used first

    def __len__(self):
        return len(self._sessions)

    def new(self, access_key_id=None):
        now = self.clock.seconds()
        session = Session(random_token(self.random_bytes), access_key_id,
                          random_token(self.random_bytes), now, now)
        self._sessions[session.id] = session
        while len(self._sessions) > self.max_sessions:
            self._sessions.popitem(last=False)
        return session

    def get(self, session_id):
        """The live session of that id (its idle time starts again), or None."""
        session = self._sessions.get(session_id)
        if session is None:
            return None
        now = self.clock.seconds()
        if now - session.last_used >= self.idle_seconds \
                or now - session.created >= self.max_age_seconds:
            del self._sessions[session_id]
            return None
        session.last_used = now
        self._sessions.move_to_end(session_id)
        return session

    def log_in(self, anonymous, access_key_id):
        """End the anonymous session ``anonymous``; a new one for the key."""
        self.end(anonymous.id)
        return self.new(access_key_id)

    def end(self, session_id):
        self._sessions.pop(session_id, None)

    def end_sessions_of(self, access_key_id):
        """Log out every session of a key (it was deleted)."""
        for session_id in [s.id for s in self._sessions.values()
                           if s.access_key_id == access_key_id]:
            del self._sessions[session_id]


def cookie_header(session, secure):
    """The Set-Cookie value that hands ``session`` (None: removes it) to
    the browser: HttpOnly (no script reads it), SameSite=Strict (no other
    site's page sends it), Secure over TLS, and scoped to the console."""
    value = session.id.encode("ascii") if session is not None else b""
    parts = [COOKIE_NAME + b"=" + value, b"Path=" + COOKIE_PATH, b"HttpOnly",
             b"SameSite=Strict"]
    if session is None:
        parts.append(b"Max-Age=0")
    if secure:
        parts.append(b"Secure")
    return b"; ".join(parts)
