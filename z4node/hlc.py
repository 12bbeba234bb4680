"""Hybrid logical clock: the one source of version timestamps.

A timestamp is one 64-bit integer, ``(wall milliseconds << 16) | counter``,
so it sorts like time, never goes backwards on one node even if the wall
clock does, and merges with a peer's timestamp (``observe``) so that causally
later writes always get larger timestamps. Newest timestamp wins
(last-writer-wins) everywhere a record is merged.

"Never goes backwards" holds across restarts too: at start the clock is
seeded (:meth:`HybridLogicalClock.seed`) with the newest timestamp of every
table, and it keeps a durable high-water mark a few seconds ahead of what
it has issued (:meth:`HybridLogicalClock.persist_with`), so a node
restarted with its wall clock set back still issues larger timestamps
than any it issued before. A peer's timestamp too far ahead of our wall
clock is refused, not adopted: one node with a wrong clock must not drag
every clock it talks to into the future.
"""

from twisted.logger import Logger

COUNTER_BITS = 16
COUNTER_MASK = (1 << COUNTER_BITS) - 1

log = Logger()


def wall_ms(timestamp):
    """The wall-clock milliseconds part of an HLC timestamp."""
    return timestamp >> COUNTER_BITS


def from_seconds(seconds):
    """The smallest timestamp at wall time ``seconds`` (for comparisons)."""
    return int(seconds * 1000) << COUNTER_BITS


class HybridLogicalClock:
    """Issues strictly increasing timestamps from ``clock.seconds()``.

    Lives on the reactor thread (not thread-safe).
    """

    # A peer's timestamp more than this ahead of our wall clock is refused
    # by observe(): NTP keeps healthy clocks within milliseconds, and a
    # minute is far beyond any honest skew.
    max_drift_seconds = 60.0
    # The durable high-water mark runs this far ahead of the newest
    # timestamp issued: at most one write of it per 5 s of issued time,
    # and after a restart the clock starts at most 5 s ahead of the
    # newest timestamp it had issued.
    persist_ahead_ms = 5000

    def __init__(self, clock, max_drift_seconds=None):
        self._clock = clock
        if max_drift_seconds is not None:
            self.max_drift_seconds = max_drift_seconds
        self._last = 0
        self._save = None
        self._persisted = 0
        self._saving = False

    def now(self):
        physical = self._physical()
        if physical > self._last:
            self._last = physical
        else:
            self._last += 1
        self._persist_if_due()
        return self._last

    def observe(self, remote):
        """Merge a timestamp seen from a peer so later local ones exceed it.
        Returns False, changing nothing, for one more than
        ``max_drift_seconds`` ahead of our wall clock."""
        limit = self._physical() + from_seconds(self.max_drift_seconds)
        if remote > limit:
            log.warn("refused a peer's timestamp {ahead:.1f} s ahead of this node's "
                     "clock (limit {limit} s)",
                     ahead=(wall_ms(remote) - wall_ms(self._physical())) / 1000.0,
                     limit=self.max_drift_seconds)
            return False
        self.seed(remote)
        return True

    def seed(self, timestamp):
        """Issue only timestamps above ``timestamp`` from now on: at start,
        the newest timestamp this node has stored or durably promised
        (trusted, so never refused for drift)."""
        if timestamp > self._last:
            self._last = timestamp
            self._persist_if_due()

    def persist_with(self, save):
        """Keep a high-water mark durable through ``save(timestamp)`` (a
        Deferred): the clock is seeded with it at the next start. Only one
        save is in flight at a time."""
        self._save = save
        self._persist_if_due()

    def _physical(self):
        return from_seconds(self._clock.seconds())

    def _persist_if_due(self):
        ahead = self.persist_ahead_ms << COUNTER_BITS
        if self._save is None or self._saving or self._last < self._persisted - ahead // 2:
            return
        mark = self._last + ahead
        self._saving = True

        def saved(_):
            self._saving = False
            self._persisted = max(self._persisted, mark)
            # Issued past half the step meanwhile: the next mark now.
            self._persist_if_due()

        def failed(failure):
            # Rows written meanwhile still seed the next start; the next
            # timestamp issued tries again.
            self._saving = False
            log.failure("saving the clock's high-water mark failed", failure)

        self._save(mark).addCallbacks(saved, failed)
