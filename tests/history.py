"""A Jepsen-style history of operations on keys, and the checker of it.

Owns: recording what clients did (:class:`History`: each write, delete and
read with the times it was invoked and completed, and whether it was
acknowledged) and checking the history per key (:func:`check`). Tests that
drive a node or a cluster with concurrent clients, kill and restart
processes, record here and assert ``check(history) == []``.

Every write puts a value never written before, so a read names the write it
saw. A delete is a write of "no object". Two operations are ordered when
one completed before the other was invoked (real time); concurrent ones are
not. The checker asks, per key, what S3's read-after-write consistency
promises:

- **no phantom**: a read returns nothing or a value some write put, and
  that write was invoked before the read completed;
- **no stale read**: a read invoked after a write (or delete) was
  acknowledged sees it or something not older: the write it saw must not
  have completed before an acknowledged write that completed before the
  read began. So an acknowledged write is never lost, and an acknowledged
  delete never undone (nothing deleted comes back);
- a failed or unanswered write may or may not have happened: reads may see
  it or not, but only after it was invoked.
"""

import threading
import time
from dataclasses import dataclass, field


@dataclass
class Op:
    kind: str  # "write" (value None: a delete) or "read"
    key: str
    value: object  # the value written, or read (None: no object)
    invoked: float
    completed: float | None = None  # None: no answer (failed or timed out)
    ok: bool = False


@dataclass
class History:
    """Operations as clients saw them; safe to record from many threads."""

    ops: list = field(default_factory=list)
    clock: object = time.monotonic

    def __post_init__(self):
        self._lock = threading.Lock()

    def invoke(self, kind, key, value=None):
        op = Op(kind, key, value, self.clock())
        with self._lock:
            self.ops.append(op)
        return op

    def complete(self, op, value=None):
        """``op`` was acknowledged (a read: with what it returned)."""
        op.completed = self.clock()
        op.ok = True
        if op.kind == "read":
            op.value = value

    def fail(self, op):
        """``op`` got an error or no answer: it may or may not have happened."""
        op.completed = None
        op.ok = False


def check(history):
    """The violations in ``history``: a list of strings, empty if none."""
    by_key = {}
    for op in history.ops:
        by_key.setdefault(op.key, []).append(op)
    problems = []
    for key, ops in sorted(by_key.items()):
        problems.extend(_check_key(key, ops))
    return problems


def _check_key(key, ops):
    writes = [op for op in ops if op.kind == "write"]
    by_value = {}
    for w in writes:
        if w.value is not None:
            by_value[w.value] = w
    problems = []
    for r in ops:
        if r.kind != "read" or not r.ok:
            continue
        # Acknowledged writes (deletes included) finished before r began.
        before = [w for w in writes if w.ok and w.completed < r.invoked]
        if r.value is not None:
            seen = by_value.get(r.value)
            if seen is None:
                problems.append(f"{key}: read {r.value!r}, which no write put")
                continue
            if seen.invoked > r.completed:
                problems.append(f"{key}: read {r.value!r} before it was written")
                continue
        else:
            seen = None
        # What r saw must not be older (in real time) than any of those.
        for w in before:
            if seen is None:
                if w.value is not None and not _deleted_after(writes, w, r):
                    problems.append(f"{key}: read nothing after write of {w.value!r} was "
                                    "acknowledged (lost write)")
                    break
            elif seen is not w and seen.ok and seen.completed < w.invoked:
                what = "delete" if w.value is None else f"write of {w.value!r}"
                problems.append(f"{key}: read {r.value!r} after the {what} that replaced "
                                "it was acknowledged (stale read)")
                break
    return problems


def _deleted_after(writes, w, r):
    """Whether a delete that may have happened after ``w`` explains a read
    ``r`` finding nothing: one acknowledged, not before ``w`` began, or one
    not acknowledged but invoked before ``r`` completed."""
    for d in writes:
        if d.value is not None or d is w:
            continue
        if d.ok and d.completed < w.invoked:
            continue  # over before w began: w replaced it
        if d.invoked < r.completed:
            return True
    return False
