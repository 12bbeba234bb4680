"""Node key rotation: rewrap every data key under a new node key, in
small transactions with a persisted cursor, without rewriting data.

What holds a wrapped data key: every row of ``chunk_keys`` (one per chunk
file), every inline object in ``versions``, every access-key secret, every
hinted table entry (``hints``, rewrapped in the last step). The
crawler walks them in key order, a batch per write transaction; each
transaction rewraps its batch *and* advances the cursor
(``node_settings.encryption_rotation``), so a crash loses at most the batch
in flight and the next start carries on from the cursor.

Why nothing is missed: every wrap happens inside a write transaction with
the node key current at that moment (``meta``, ``ChunkKeys``), the new key
becomes current as soon as the transaction that records the rotation
commits, and the walk starts after that. So a row wrapped by the old key
is either already there when the walk passes it, or was written by a
transaction that committed before the walk began. The last transaction
still rewraps any row not under the new key (belt and braces), then
records the new key as the data dir's key and drops the rotation record,
in one commit: from then on only the new key opens the data dir.

While a rotation is recorded, either key opens the data dir: the record
holds each key wrapped by the other (``atrest``). Once it is done, the old
key opens nothing; the operator restarts the node with the new key.
"""

import json
import time

from cryptography.hazmat.primitives.keywrap import aes_key_wrap
from twisted.internet.defer import Deferred, succeed
from twisted.internet.task import deferLater
from twisted.logger import Logger

from z4node.storage.atrest import ENCRYPTION_SETTING, ROTATION_SETTING
from z4node.storage.crypto import KEY_ID_BYTES, Tampered, key_id

log = Logger()


class RotationError(Exception):
    """A rotation that cannot be started; the message says why."""


class KeyRotation:
    """The rotation crawler of one node (see module doc)."""

    # Rows rewrapped per write transaction. Measured on 2 shared cores
    # (load 5): 1,000 rows held the writer ~24 ms a transaction, so 250
    # keep a PUT queued behind one to ~6 ms extra.
    batch_rows = 250
    # Pause between transactions so the walk never takes the writer whole;
    # with 250-row batches the walk still does ~15,000 keys a second (1M
    # chunks, about 4 TB, in ~70 s).
    pause_seconds = 0.01
    # Transactions per second at most when an operator sets a rate.
    rated_steps_per_second = 10

    def __init__(self, clock, meta, at_rest):
        self._clock = clock
        self._meta = meta
        self._at_rest = at_rest
        self.state = None
        self.last_finished = None
        self._running = None
        self._stopping = False

    async def load(self):
        """Read the rotation record (after a restart)."""
        text = await self._meta.get_setting(ROTATION_SETTING)
        self.state = json.loads(text) if text else None
        return self.state

    def status(self):
        state = self.state
        if state is None:
            return {"rotating": False, "key_id": self._at_rest.keyring.current_id.hex(),
                    "finished": self.last_finished}
        return {"rotating": True, "running": self._running is not None,
                "from": state["from"], "to": state["to"], "phase": state["phase"],
                "done": state["done"], "total": state["total"],
                "started": state["started"], "max_rate": state.get("max_rate")}

    def _pace(self):
        """(rows per transaction, pause after it) for the recorded rate."""
        rate = (self.state or {}).get("max_rate")
        if not rate:
            return self.batch_rows, self.pause_seconds
        batch = max(1, min(self.batch_rows, int(rate / self.rated_steps_per_second)))
        return batch, batch / rate

    async def start(self, new_key, max_rate=None):
        """Record a rotation to ``new_key`` and start the walk, rewrapping
        at most ``max_rate`` data keys a second if given (the rate is kept
        with the rotation, so a restart goes on at it); resumes a recorded
        rotation to the same key."""
        keyring = self._at_rest.keyring
        new_id = key_id(new_key).hex()
        if self.state is not None:
            if self.state["to"] != new_id:
                raise RotationError(
                    f"a rotation to node key {self.state['to']} is in progress; "
                    "finish it first (run `z4 encryption rotate` with that key, or "
                    "with no key to resume)")
            self.resume()
            return self.status()
        if new_id == keyring.current_id.hex():
            raise RotationError("the new key is the key already in use")
        old_key = keyring.key(keyring.current_id)
        now = self._clock.seconds()

        def record(c):
            if c.execute("SELECT 1 FROM node_settings WHERE name=?",
                         (ROTATION_SETTING,)).fetchone():
                raise RotationError("another rotation was recorded meanwhile")
            total = (c.execute("SELECT count(*) FROM chunk_keys").fetchone()[0]
                     + c.execute("SELECT count(*) FROM versions WHERE inline IS NOT NULL")
                     .fetchone()[0])
            state = {"from": keyring.current_id.hex(), "to": new_id,
                     "new_key": aes_key_wrap(old_key, new_key).hex(),
                     "old_key": aes_key_wrap(new_key, old_key).hex(),
                     "phase": "chunks", "after": None, "done": 0, "total": total,
                     "started": now, "max_rate": max_rate}
            _save_state(c, state)
            return state

        state = await self._meta.db.write(record)
        # Committed: from now on every new wrap uses the new key (see
        # module doc for why this ordering leaves nothing behind).
        keyring.use(new_key)
        self.state = state
        log.info("encryption: rotating node key {old} -> {new} ({total} data keys)",
                 old=state["from"], new=new_id, total=state["total"])
        self.resume()
        return self.status()

    def resume(self):
        """Run the walk if a rotation is recorded and it is not running."""
        if self.state is None or self._running is not None:
            return self._running
        self._stopping = False
        self._running = Deferred.fromCoroutine(self._walk())
        self._running.addErrback(
            lambda f: log.failure("encryption: key rotation stopped", f))
        return self._running

    def stop(self):
        """Stop after the transaction in flight; fires when stopped."""
        self._stopping = True
        return self._running if self._running is not None else succeed(None)

    async def _walk(self):
        try:
            while self.state is not None and not self._stopping:
                batch, pause = self._pace()
                self.state = await self._meta.db.write(
                    _step, self._at_rest, batch, self._clock.seconds())
                if self.state is None:
                    self._at_rest.keyring.forget_others()
                    self.last_finished = self._clock.seconds()
                    log.info("encryption: rotation finished; node key is now {id}",
                             id=self._at_rest.keyring.current_id.hex())
                    break
                if pause:
                    await deferLater(self._clock, pause, lambda: None)
        finally:
            self._running = None


def _save_state(c, state):
    c.execute("INSERT OR REPLACE INTO node_settings VALUES (?, ?)",
              (ROTATION_SETTING, json.dumps(state, sort_keys=True)))


def _load_state(c):
    row = c.execute("SELECT value FROM node_settings WHERE name=?",
                    (ROTATION_SETTING,)).fetchone()
    return json.loads(row[0]) if row else None


def _step(c, at_rest, batch, now):
    """One write transaction of the walk; the new state (None when done)."""
    state = _load_state(c)
    if state is None:
        return None
    phase = state["phase"]
    if phase == "chunks":
        after = bytes.fromhex(state["after"]) if state["after"] else b""
        rows = c.execute("SELECT hash, wrapped FROM chunk_keys WHERE hash>?"
                         " ORDER BY hash LIMIT ?", (after, batch)).fetchall()
        for digest, wrapped in rows:
            _rewrap_chunk_key(c, at_rest, digest, wrapped)
        state["done"] += len(rows)
        if len(rows) < batch:
            state["phase"], state["after"] = "inline", None
        else:
            state["after"] = rows[-1][0].hex()
    elif phase == "inline":
        if state["after"] is None:
            where, params = "", ()
        else:
            bucket, key_hex, hlc = state["after"]
            where, params = " AND (bucket, key, hlc) > (?, ?, ?)", (
                bucket, bytes.fromhex(key_hex), hlc)
        rows = c.execute(
            "SELECT bucket, key, hlc, inline FROM versions WHERE inline IS NOT NULL"
            f"{where} ORDER BY bucket, key, hlc LIMIT ?", (*params, batch)).fetchall()
        for bucket, key, hlc, inline in rows:
            _rewrap_inline(c, at_rest, bucket, key, hlc, inline)
        state["done"] += len(rows)
        if len(rows) < batch:
            state["phase"], state["after"] = "finish", None
        else:
            bucket, key, hlc, _ = rows[-1]
            state["after"] = [bucket, key.hex(), hlc]
    else:
        _finish(c, at_rest, state, now)
        return None
    _save_state(c, state)
    return state


def _finish(c, at_rest, state, now):
    """Rewrap what is left (secrets, and any straggler), then make the new
    key the data dir's key, in this one transaction."""
    current = at_rest.keyring.current_id
    for digest, wrapped in c.execute(
            "SELECT hash, wrapped FROM chunk_keys WHERE substr(wrapped, 1, ?) != ?",
            (KEY_ID_BYTES, current)).fetchall():
        _rewrap_chunk_key(c, at_rest, digest, wrapped)
    for bucket, key, hlc, inline in c.execute(
            "SELECT bucket, key, hlc, inline FROM versions WHERE inline IS NOT NULL"
            " AND substr(inline, 2, ?) != ?", (KEY_ID_BYTES, current)).fetchall():
        _rewrap_inline(c, at_rest, bucket, key, hlc, inline)
    # Hinted entries are few (they live hours at most): rewrapped here.
    for hint_id, sealed in c.execute(
            "SELECT id, entry FROM hints WHERE entry IS NOT NULL"
            " AND substr(entry, 2, ?) != ?", (KEY_ID_BYTES, current)).fetchall():
        try:
            rewrapped = at_rest.rewrap_inline(sealed)
        except Tampered as e:
            log.error("encryption: hint {id} is damaged ({error}); it will be dropped",
                      id=hint_id, error=str(e))
            continue
        if rewrapped is not None:
            c.execute("UPDATE hints SET entry=? WHERE id=?", (rewrapped, hint_id))
    for access_key_id, secret in c.execute(
            "SELECT access_key_id, secret FROM access_keys").fetchall():
        try:
            rewrapped = at_rest.rewrap_secret(secret)
        except Tampered as e:
            log.error("encryption: access key {id} cannot be rewrapped ({error}); "
                      "it stays unusable", id=access_key_id, error=str(e))
            continue
        if rewrapped is not None:
            c.execute("UPDATE access_keys SET secret=? WHERE access_key_id=?",
                      (rewrapped, access_key_id))
    c.execute("INSERT OR REPLACE INTO node_settings VALUES (?, ?)", (
        ENCRYPTION_SETTING, json.dumps({
            "key_id": state["to"], "previous_key_id": state["from"],
            "rotated": now, "rotated_utc": time.strftime(
                "%Y-%m-%dT%H:%M:%SZ", time.gmtime(now))}, sort_keys=True)))
    c.execute("DELETE FROM node_settings WHERE name=?", (ROTATION_SETTING,))


def _rewrap_chunk_key(c, at_rest, digest, wrapped):
    keyring = at_rest.keyring
    if keyring.is_current(wrapped):
        return
    try:
        rewrapped = keyring.rewrap(wrapped)
    except Tampered as e:
        # The chunk is unreadable with any key; a rotation cannot help it,
        # and must not stop on it. Reads of it report it corrupted.
        log.error("encryption: data key of chunk {hash} is damaged ({error})",
                  hash=digest.hex(), error=str(e))
        return
    c.execute("UPDATE chunk_keys SET wrapped=? WHERE hash=?", (rewrapped, digest))


def _rewrap_inline(c, at_rest, bucket, key, hlc, inline):
    try:
        rewrapped = at_rest.rewrap_inline(inline)
    except Tampered as e:
        log.error("encryption: inline object {bucket}/{key} is damaged ({error})",
                  bucket=bucket, key=key.decode("utf-8", "replace"), error=str(e))
        return
    if rewrapped is not None:
        c.execute("UPDATE versions SET inline=? WHERE bucket=? AND key=? AND hlc=?",
                  (rewrapped, bucket, key, hlc))
