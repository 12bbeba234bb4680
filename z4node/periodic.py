"""Periodic background jobs that survive their own errors.

Owns :class:`PeriodicJob`, the one timer the node's periodic jobs (garbage
collection, DHT maintenance) run on. A failed run is logged with its
traceback, counted, and the job runs again next period: one transient
OSError must not stop a job until the next restart (a bare
``LoopingCall`` stops for good at the first exception). It knows nothing of
what the jobs do.
"""

from twisted.internet.defer import maybeDeferred
from twisted.internet.task import LoopingCall
from twisted.logger import Logger


class PeriodicJob:
    """Calls ``work()`` every ``interval`` seconds (once started) on
    ``clock``. ``work`` may return a Deferred; the next run is due one
    interval after the previous one started, or when it finishes if it
    took longer (``LoopingCall``'s rule: runs never overlap)."""

    log = Logger()

    def __init__(self, name, clock, work):
        self.name = name
        self._clock = clock
        self._work = work
        self._loop = LoopingCall(self._run)
        self._loop.clock = clock
        self.runs = 0
        self.failures = 0
        self.last_failure = None

    @property
    def running(self):
        return self._loop.running

    def start(self, interval, now=False):
        """Run every ``interval`` seconds, the first time now or after one
        interval."""
        # _run never fails, so the loop's own Deferred fires only on stop().
        self._loop.start(interval, now=now)

    def stop(self):
        if self._loop.running:
            self._loop.stop()

    def _run(self):
        d = maybeDeferred(self._work)
        d.addCallbacks(self._succeeded, self._failed)
        return d

    def _succeeded(self, _):
        self.runs += 1

    def _failed(self, failure):
        self.runs += 1
        self.failures += 1
        self.last_failure = {"at": self._clock.seconds(),
                             "error": f"{failure.type.__name__}: {failure.getErrorMessage()}"}
        self.log.failure("{job} failed; it runs again next period", failure, job=self.name)

    def status(self):
        """Counters for status reports: runs, failed runs, the last failure."""
        return {"runs": self.runs, "failures": self.failures,
                "last_failure": self.last_failure}
