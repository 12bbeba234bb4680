"""Object Lock: retention and legal holds on object versions, as S3 (and
the backup tools that rely on it, Veeam first) expect.

A version may carry a retention (mode and retain-until time) and a legal
hold, both kept in its metadata (``meta["retention"]``,
``meta["legal_hold"]``). While either is in force the version cannot be
removed or overwritten in place, by a client, by a copy, or by lifecycle:

- COMPLIANCE: nobody can remove the version, shorten the retention or
  weaken its mode until it passes.
- GOVERNANCE: the same, except for a request that sends
  ``x-amz-bypass-governance-retention: true`` with a key allowed to
  (the S3 layer decides who is).
- A legal hold blocks removal whatever the retention says, until it is
  turned off.

Delete markers can always be written: they hide a version, they do not
remove it. The bucket's lock configuration (``settings["object_lock"]``)
says whether lock is enabled and what default retention new versions get.
"""

from z4node.objects.errors import ObjectError

GOVERNANCE = "GOVERNANCE"
COMPLIANCE = "COMPLIANCE"
MODES = (GOVERNANCE, COMPLIANCE)

# S3's length of a retention "year" in a bucket's default retention.
DAY_SECONDS = 24 * 3600
YEAR_DAYS = 365

LOCKED_MESSAGE = "Access Denied because object protected by object lock."


def enabled(bucket):
    return bool(bucket.settings.get("object_lock", {}).get("enabled"))


def default_rule(bucket):
    """``{"mode": ..., "days"|"years": n}`` or None."""
    return bucket.settings.get("object_lock", {}).get("rule")


def retention(meta):
    """``(mode, until_seconds)`` or None."""
    value = meta.get("retention")
    if not value:
        return None
    return value["mode"], value["until"]


def legal_hold(meta):
    return bool(meta.get("legal_hold"))


def with_default_retention(bucket, meta, now):
    """meta with the bucket's default retention applied when the request
    named none (S3 applies it as the version is created)."""
    rule = default_rule(bucket)
    if rule is None or meta.get("retention"):
        return meta
    days = rule.get("days") or YEAR_DAYS * rule.get("years", 0)
    meta = dict(meta)
    meta["retention"] = {"mode": rule["mode"], "until": now + days * DAY_SECONDS}
    return meta


def is_protected(version, now):
    """Whether anything at all protects the version now (lifecycle skips it)."""
    if version.delete_marker:
        return False
    held = retention(version.meta)
    return legal_hold(version.meta) or (held is not None and held[1] > now)


def check_removable(version, now, bypass_governance=False):
    """Raise AccessDenied unless the version may be removed for good now."""
    if version.delete_marker:
        return
    if legal_hold(version.meta):
        raise ObjectError("AccessDenied", LOCKED_MESSAGE)
    held = retention(version.meta)
    if held is None:
        return
    mode, until = held
    if until > now and not (mode == GOVERNANCE and bypass_governance):
        raise ObjectError("AccessDenied", LOCKED_MESSAGE)


def check_retention_change(version, new, now, bypass_governance=False):
    """Raise AccessDenied unless the version's retention may become ``new``
    (``(mode, until)`` or None to remove it): a retention in force may be
    extended, or made COMPLIANCE; weakening a GOVERNANCE one needs the
    bypass; a COMPLIANCE one can never be weakened."""
    old = retention(version.meta)
    if old is None or old[1] <= now:
        return
    old_mode, old_until = old
    stronger = new is not None and new[1] >= old_until and (
        new[0] == COMPLIANCE or old_mode == GOVERNANCE)
    if stronger:
        return
    if old_mode == GOVERNANCE and bypass_governance:
        return
    raise ObjectError("AccessDenied", LOCKED_MESSAGE)
