"""Lifecycle: the rules of a bucket's lifecycle configuration, when each
version, delete marker and multipart upload is due, and the background
worker that carries the rules out.

A bucket's rules live in its settings (``settings["lifecycle"]``, a list of
rule dicts written by the S3 layer's parser); this module never reads XML.
Due times follow S3: a rule of N days counts from the object's creation
(a noncurrent version's count starts when its successor was written, an
upload's at its initiation), and the sum is rounded up to the next
midnight UTC, i.e. the next multiple of the day length. The day length is
86,400 s, except under the test-only setting that shortens it (see
``LifecycleWorker``).

The worker walks every bucket that has rules, key by key in bounded
batches, through the object layer (so Object Lock, the head cache and
chunk reference counts stay exact), saving its place after each batch
so a restart resumes mid-pass. It never removes a version that Object
Lock protects.
"""

import json
import math
import time
from dataclasses import dataclass, field

from twisted.application.service import Service
from twisted.internet.defer import Deferred
from twisted.internet.task import LoopingCall, deferLater
from twisted.logger import Logger

from z4node.objects import lock
from z4node.objects.errors import ObjectError

DAY_SECONDS = 24 * 3600


def due_after(start, days, day_seconds):
    """``start + days``, rounded up to the next midnight (multiple of a day)."""
    return math.ceil((start + days * day_seconds) / day_seconds) * day_seconds


@dataclass
class Rule:
    """One lifecycle rule, in the form the bucket settings keep it."""

    id: str
    enabled: bool = True
    # The filter: every part given must match.
    prefix: str = ""
    tags: dict = field(default_factory=dict)
    size_greater_than: int | None = None
    size_less_than: int | None = None
    # How the client wrote the filter, to give it back the same way:
    # "legacy" (<Prefix> outside a filter), "empty", "prefix", "tag",
    # "size_greater_than", "size_less_than" or "and".
    filter_style: str = "empty"
    expiration_days: int | None = None
    expiration_date: float | None = None
    expired_object_delete_marker: bool | None = None
    noncurrent_days: int | None = None
    newer_noncurrent_versions: int | None = None
    abort_upload_days: int | None = None

    @classmethod
    def from_dict(cls, value):
        return cls(**value)

    def to_dict(self):
        return dict(self.__dict__)

    def matches(self, key, size, tags):
        if not key.startswith(self.prefix):
            return False
        for name, value in self.tags.items():
            if tags.get(name) != value:
                return False
        if self.size_greater_than is not None and not size > self.size_greater_than:
            return False
        if self.size_less_than is not None and not size < self.size_less_than:
            return False
        return True

    def matches_version(self, version):
        """Delete markers have no size and no tags: only the prefix applies."""
        if version.delete_marker:
            return version.key.startswith(self.prefix)
        return self.matches(version.key, version.size, version.meta.get("tags", {}))

    def current_due(self, created, day_seconds):
        """When a current version created at ``created`` expires, or None."""
        if self.expiration_days is not None:
            return due_after(created, self.expiration_days, day_seconds)
        if self.expiration_date is not None:
            return self.expiration_date
        return None


def rules_of(bucket):
    """The enabled rules of a bucket's lifecycle configuration."""
    return [r for r in (Rule.from_dict(d) for d in bucket.settings.get("lifecycle", []))
            if r.enabled]


def current_expiration(rules, version, day_seconds):
    """``(due, rule_id)`` of the earliest Expiration that applies to a
    current version, or None: what ``x-amz-expiration`` tells."""
    best = None
    for rule in rules:
        if not rule.matches_version(version):
            continue
        due = rule.current_due(version.last_modified, day_seconds)
        if due is not None and (best is None or due < best[0]):
            best = (due, rule.id)
    return best


def upload_abort(rules, upload, day_seconds):
    """``(due, rule_id)`` of the earliest AbortIncompleteMultipartUpload for
    an upload, or None."""
    best = None
    for rule in rules:
        if rule.abort_upload_days is None or not upload.key.startswith(rule.prefix):
            continue
        due = due_after(upload.initiated, rule.abort_upload_days, day_seconds)
        if best is None or due < best[0]:
            best = (due, rule.id)
    return best


@dataclass
class Action:
    """Something a rule makes due: ``kind`` is "expire" (the current
    version gets a delete marker, or in a never-versioned bucket is
    deleted), "remove" (a noncurrent version or an expired object delete
    marker goes for good) or "abort" (a multipart upload)."""

    kind: str
    bucket: str
    key: str
    version: object
    rule_id: str
    # A "remove" of a noncurrent version (not of a lone delete marker).
    noncurrent: bool = False
    # A delete marker's removal that is due only if every other action on
    # its key (the removal of the versions behind it) was carried out.
    after_others: bool = False


def plan_key(rules, bucket, key, versions, now, day_seconds):
    """The actions due now for one key, given its versions newest first.

    A delete marker is expired once it is the only version left, also
    when this very pass removes the versions behind it: it goes in the
    same pass, after them (an Action with ``after_others``), so a test
    "day" shows it, and not a day later."""
    if not versions:
        return []
    actions = []
    latest = versions[0]
    if not latest.delete_marker:
        expiry = current_expiration(rules, latest, day_seconds)
        if expiry is not None and expiry[0] <= now:
            actions.append(Action("expire", bucket, key, latest, expiry[1]))
    for rank, version in enumerate(versions[1:]):
        became_noncurrent = versions[rank].last_modified
        for rule in rules:
            if rule.noncurrent_days is None or not rule.matches_version(version):
                continue
            if rule.newer_noncurrent_versions is not None \
                    and rank < rule.newer_noncurrent_versions:
                continue
            if due_after(became_noncurrent, rule.noncurrent_days, day_seconds) <= now:
                if not lock.is_protected(version, now):
                    actions.append(Action("remove", bucket, key, version, rule.id,
                                          noncurrent=True))
                break
    if latest.delete_marker and len(actions) == len(versions) - 1:
        # An expired object delete marker: nothing else is left after
        # this pass's removals.
        for rule in rules:
            if not rule.matches_version(latest):
                continue
            if rule.expired_object_delete_marker:
                # Expired from the moment it is alone.
                due = latest.last_modified
            else:
                due = rule.current_due(latest.last_modified, day_seconds)
            if due is not None and due <= now:
                actions.append(Action("remove", bucket, key, latest, rule.id,
                                      after_others=len(actions) > 0))
                break
    return actions


class LifecycleWorker(Service):
    """Applies every bucket's lifecycle rules, on an interval.

    A pass walks the buckets that have rules in name order, each bucket's
    keys in batches of ``batch_keys`` (every version of those keys is read
    in one query), then its open multipart uploads in batches of
    ``batch_uploads``. After each batch the position is saved in the
    metadata store (node setting ``lifecycle.cursor``), so a node stopped
    mid-pass resumes where it was, and the worker sleeps so that it keeps
    to ``allowed_busy_fraction`` of the time: it never stalls the node.

    ``day_seconds`` below 86,400 is the test-only setting (as Ceph's
    ``rgw_lc_debug_interval``): rules count days of that many seconds and
    the worker runs that often. It exists so that end-to-end tests can see
    rules act in seconds; it is not for production.

    With ``dry_run`` the worker logs what it would do and does nothing.
    """

    name = "lifecycle"
    # A pass an hour: rules are in whole days, and a pass over a bucket
    # with nothing due costs one read per batch of keys.
    interval_seconds = 3600
    # Keys (with all their versions) per batch, and uploads per batch: a
    # batch is one read transaction of at most a few hundred rows.
    batch_keys = 100
    batch_uploads = 100
    # Share of wall time the worker may be busy; it sleeps the rest
    # (Tahoe's crawler keeps to 10%; lifecycle work is lighter per row).
    allowed_busy_fraction = 0.2
    # A pass that was interrupted resumes this long after start-up.
    resume_delay_seconds = 5

    log = Logger()
    CURSOR = "lifecycle.cursor"

    def __init__(self, clock, objects, meta, interval_seconds=None,
                 day_seconds=DAY_SECONDS, dry_run=False, timer=time.monotonic):
        self._clock = clock
        self._objects = objects
        self._meta = meta
        self.day_seconds = day_seconds
        if interval_seconds is not None:
            self.interval_seconds = interval_seconds
        self.dry_run = dry_run
        # Measures how long a batch took, to sleep in proportion; the
        # injected clock stays the one source of "now" for the rules.
        self._timer = timer
        self._loop = LoopingCall(self._scheduled_pass)
        self._loop.clock = clock
        self._running = None
        self._resume_call = None
        self.passes = 0
        self.last_pass = None
        self.totals = {"expire": 0, "remove": 0, "abort": 0, "skipped": 0}

    def startService(self):
        super().startService()
        self._loop.start(self.interval_seconds, now=False).addErrback(
            lambda f: self.log.failure("lifecycle worker stopped", f))
        # Fires once the worker knows whether a pass was interrupted.
        self.checked_cursor = self._meta.get_setting(self.CURSOR).addCallback(
            self._resume_if_interrupted)

    def _resume_if_interrupted(self, cursor):
        if cursor is not None and self.running:
            self._resume_call = self._clock.callLater(self.resume_delay_seconds,
                                                      self._scheduled_pass)

    def stopService(self):
        super().stopService()
        if self._loop.running:
            self._loop.stop()
        if self._resume_call is not None and self._resume_call.active():
            self._resume_call.cancel()

    def status(self):
        return {"dry_run": self.dry_run, "interval_seconds": self.interval_seconds,
                "day_seconds": self.day_seconds, "passes": self.passes,
                "last_pass": self.last_pass, "totals": dict(self.totals)}

    def _scheduled_pass(self):
        """A pass from the timer: a failure is logged, and the next pass
        (which resumes from the saved cursor) still comes on time."""
        return self.run_pass().addErrback(
            lambda f: self.log.failure("lifecycle pass failed; resuming next time", f))

    def run_pass(self):
        """One pass over every bucket with rules (resuming a saved one);
        a Deferred firing with the actions taken (or, dry, that would be)."""
        if self._running is not None:
            return self._running
        d = Deferred.fromCoroutine(self._pass())

        def done(result):
            self._running = None
            return result
        self._running = d
        d.addBoth(done)
        return d

    async def _pass(self):
        saved = await self._meta.get_setting(self.CURSOR)
        cursor = json.loads(saved) if saved else None
        started = cursor["started"] if cursor else self._clock.seconds()
        done = []
        # Each bucket's rules are carried out by one node, its first owner.
        buckets = [b for b in self._objects.system.buckets()
                   if rules_of(b) and self._objects.is_first_owner(b.name)]
        for bucket in buckets:
            if cursor is not None and bucket.name < cursor["bucket"]:
                continue
            resume = cursor if cursor is not None and cursor["bucket"] == bucket.name else None
            cursor = None
            await self._bucket(bucket.name, started, resume, done)
        await self._meta.set_setting(self.CURSOR, None)
        self.passes += 1
        self.last_pass = {"started": started, "finished": self._clock.seconds(),
                          "actions": len(done)}
        if done:
            self.log.info("lifecycle pass: {n} {what} ({dry})", n=len(done),
                          what="actions", dry="dry run" if self.dry_run else "done")
        return done

    async def _save(self, started, bucket, phase, after):
        await self._meta.set_setting(self.CURSOR, json.dumps(
            {"started": started, "bucket": bucket, "phase": phase, "after": after}))

    async def _pause(self, began):
        busy = self._timer() - began
        pause = busy * (1 - self.allowed_busy_fraction) / self.allowed_busy_fraction
        if pause > 0.001:
            await deferLater(self._clock, pause)

    async def _bucket(self, name, started, resume, done):
        phase = resume["phase"] if resume else "keys"
        after = resume["after"] if resume else None
        if phase == "keys":
            while True:
                began = self._timer()
                target = self._objects.system.bucket(name)
                if target is None:
                    return
                rules = rules_of(target)
                batch = await self._meta.versions_of_keys(name, after, self.batch_keys)
                now = self._clock.seconds()
                for key, versions in batch:
                    carried_out = True
                    for action in plan_key(rules, name, key, versions, now,
                                           self.day_seconds):
                        if action.after_others and not carried_out:
                            # A version behind the marker stayed: removing
                            # the marker would make that version current.
                            self.totals["skipped"] += 1
                            continue
                        carried_out = await self._apply(action, done) and carried_out
                if not batch:
                    break
                after = batch[-1][0]
                await self._save(started, name, "keys", after)
                await self._pause(began)
                if len(batch) < self.batch_keys:
                    break
            after = None
        marker = after
        while True:
            began = self._timer()
            target = self._objects.system.bucket(name)
            if target is None:
                return
            rules = rules_of(target)
            key_marker, upload_marker = marker if marker else (None, None)
            uploads, truncated = await self._objects.list_uploads(
                name, "", "", key_marker, upload_marker, self.batch_uploads)
            now = self._clock.seconds()
            for upload in uploads:
                due = upload_abort(rules, upload, self.day_seconds)
                if due is not None and due[0] <= now:
                    await self._apply(Action("abort", name, upload.key, upload, due[1]),
                                      done)
            if not uploads:
                break
            marker = [uploads[-1].key, uploads[-1].upload_id]
            await self._save(started, name, "uploads", marker)
            await self._pause(began)
            if not truncated:
                break

    async def _apply(self, action, done):
        """Carry out one action (or log it, dry); whether it was."""
        # The version id, or for an upload its upload id.
        name = getattr(action.version, "version_id", None) or action.version.upload_id
        what = f"{action.kind} {action.bucket}/{action.key} {name} (rule {action.rule_id!r})"
        if self.dry_run:
            self.log.info("lifecycle (dry run): would {what}", what=what)
            done.append(action)
            return True
        try:
            if action.kind == "expire":
                await self._expire(action)
            elif action.kind == "remove":
                await self._objects.delete_object(
                    action.bucket, action.key, None, version_id=action.version.version_id,
                    precondition=_unchanged(action.version),
                    only_noncurrent=action.noncurrent)
            else:
                await self._objects.abort_upload(action.bucket, action.key,
                                                 action.version.upload_id)
        except ObjectError as e:
            # Changed under us (a new version, a retention, a completed
            # upload): the next pass looks again.
            self.totals["skipped"] += 1
            self.log.debug("lifecycle: skipped {what}: {code}", what=what, code=e.code)
            return False
        self.totals[action.kind] += 1
        self.log.debug("lifecycle: {what}", what=what)
        done.append(action)
        return True

    async def _expire(self, action):
        """The current version's expiration: a delete marker (the null one
        in a suspended bucket), or in a never-versioned bucket the object's
        deletion; written only if that version is still current."""
        bucket = self._objects.bucket(action.bucket)
        expected = action.version.hlc

        def still_current(current):
            if current is None or current.hlc != expected:
                raise ObjectError("PreconditionFailed")
        await self._objects.delete_object(action.bucket, action.key, bucket.owner,
                                          precondition=still_current)


def _unchanged(expected):
    """A removal's precondition: the version is the one the rules judged."""
    def check(version):
        if version.hlc != expected.hlc:
            raise ObjectError("PreconditionFailed")
    return check
