"""Hybrid logical clock: the one source of version timestamps.

A timestamp is one 64-bit integer, ``(wall milliseconds << 16) | counter``,
so it sorts like time, never goes backwards on one node even if the wall
clock does, and merges with a peer's timestamp (``observe``) so that causally
later writes always get larger timestamps. Newest timestamp wins
(last-writer-wins) everywhere a record is merged.
"""

COUNTER_BITS = 16
COUNTER_MASK = (1 << COUNTER_BITS) - 1


def wall_ms(timestamp):
    """The wall-clock milliseconds part of an HLC timestamp."""
    return timestamp >> COUNTER_BITS


def from_seconds(seconds):
    """The smallest timestamp at wall time ``seconds`` (for comparisons)."""
    return int(seconds * 1000) << COUNTER_BITS


class HybridLogicalClock:
    """Issues strictly increasing timestamps from ``clock.seconds()``."""

    def __init__(self, clock):
        self._clock = clock
        self._last = 0

    def now(self):
        physical = int(self._clock.seconds() * 1000) << COUNTER_BITS
        if physical > self._last:
            self._last = physical
        else:
            self._last += 1
        return self._last

    def observe(self, remote):
        """Merge a timestamp seen from a peer so later local ones exceed it."""
        if remote > self._last:
            self._last = remote
