"""Lifeguard's two timing devices (Dadgar et al. 2018, as HashiCorp
memberlist implements them): the local health multiplier and the suspicion
timer that shrinks with independent confirmations.

Owns only the arithmetic and the timer; :mod:`z4node.cluster.membership`
decides when to feed them.
"""

import math


class LocalHealth:
    """Lifeguard's local health multiplier (LHM).

    A score from 0 (healthy) to ``maximum - 1``: probes that go unanswered
    while the indirect probers expected to nack stay silent, or having to
    refute a suspicion about ourselves, mean *this* node is slow or its
    network is; each successful probe lowers it again. Timeouts scaled by it
    give a struggling node longer before it accuses anyone.
    """

    # memberlist's AwarenessMaxMultiplier: a sick node probes at most 8x
    # slower, which bounds how late it notices a real failure.
    maximum = 8

    def __init__(self):
        self.score = 0

    def apply(self, delta):
        self.score = min(self.maximum - 1, max(0, self.score + delta))

    def scale(self, seconds):
        return seconds * (self.score + 1)


class Suspicion:
    """The timer that turns a suspect into a dead member.

    Starts at ``maximum`` seconds and shrinks towards ``minimum`` as
    independent members confirm the suspicion (Lifeguard LHA-Suspicion):
    with ``c`` of the ``k`` expected confirmations the timeout is
    ``max(minimum, maximum - (maximum - minimum) * log(c + 1) / log(k + 1))``
    measured from when the suspicion started.
    """

    def __init__(self, clock, origin, k, minimum, maximum, on_timeout):
        self._clock = clock
        self.start = clock.seconds()
        self.k = k
        self.minimum = minimum
        self.maximum = maximum if k > 0 else minimum
        self.confirmers = {origin}
        self._on_timeout = on_timeout
        self.due = self.start + self.timeout()
        self._call = clock.callLater(self.timeout(), on_timeout)

    def timeout(self):
        """Seconds from the start until the suspect is declared dead."""
        c = len(self.confirmers) - 1
        if self.k <= 0:
            return self.minimum
        frac = math.log(c + 1) / math.log(self.k + 1)
        return max(self.minimum, self.maximum - frac * (self.maximum - self.minimum))

    def confirm(self, member_id):
        """Count an independent confirmation; True if it was a new one."""
        if member_id in self.confirmers or len(self.confirmers) > self.k:
            return False
        self.confirmers.add(member_id)
        now = self._clock.seconds()
        self.due = max(now, self.start + self.timeout())
        self._call.cancel()
        self._call = self._clock.callLater(self.due - now, self._on_timeout)
        return True

    def postpone(self, seconds):
        """Fire again in ``seconds`` (the node was stalled; see Membership)."""
        self.due = self._clock.seconds() + seconds
        self._call = self._clock.callLater(seconds, self._on_timeout)

    def cancel(self):
        if self._call.active():
            self._call.cancel()
