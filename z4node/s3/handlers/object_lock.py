"""Object Lock: Put/GetObjectLockConfiguration, Put/GetObjectRetention,
Put/GetObjectLegalHold, the ``x-amz-object-lock-*`` headers of uploads
and copies, and the lock headers of GET/HEAD responses. The rules
themselves (what a retention forbids) are the object layer's
(``z4node.objects.lock``)."""

from datetime import datetime, timezone

from z4node.objects import lock, versioning
from z4node.s3 import authorization, xml
from z4node.s3.api import Response
from z4node.s3.errors import S3Error
from z4node.s3.handlers.documents import has_digest, integer, only, read_document
from z4node.s3.handlers.versioning import requested_version, version_headers

# S3's bounds on a bucket's default retention.
MAX_DEFAULT_DAYS = 36500
MAX_DEFAULT_YEARS = 100


def parse_date(text):
    """An ISO 8601 time as unix seconds, or None; None too for a time whose
    UTC date is past the year 9999 (``9999-12-31T23:59:59-14:00``): it
    could never be written back in a header or a document, and every GET
    of the object would fail."""
    try:
        moment = datetime.fromisoformat(text.strip())
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=timezone.utc)
        return moment.astimezone(timezone.utc).timestamp()
    except (AttributeError, ValueError, OverflowError):
        return None


def bypass_governance(api, call):
    """Whether the request asks to bypass GOVERNANCE retention and its key
    may (``s3:BypassGovernanceRetention``); without the right, the header
    is ignored and the retention holds, as in S3."""
    if call.headers.get("x-amz-bypass-governance-retention", "").strip().lower() != "true":
        return False
    return authorization.allows(api, call, "BypassGovernanceRetention").allowed


def lock_meta_from_headers(api, headers):
    """The retention and legal hold a PUT, copy or multipart upload asks
    for with ``x-amz-object-lock-*`` headers, as version metadata."""
    meta = {}
    mode = headers.get("x-amz-object-lock-mode")
    until = headers.get("x-amz-object-lock-retain-until-date")
    if (mode is None) != (until is None):
        raise S3Error("InvalidArgument", "x-amz-object-lock-retain-until-date and "
                      "x-amz-object-lock-mode must both be supplied")
    if mode is not None:
        if mode not in lock.MODES:
            raise S3Error("InvalidArgument", "Unknown wormMode directive.",
                          extra={"ArgumentName": "x-amz-object-lock-mode",
                                 "ArgumentValue": mode})
        when = parse_date(until)
        if when is None:
            raise S3Error("InvalidArgument", "The retain until date must be provided in "
                          "ISO 8601 format", extra={
                              "ArgumentName": "x-amz-object-lock-retain-until-date",
                              "ArgumentValue": until})
        if when <= api.clock.seconds():
            raise S3Error("InvalidArgument", "The retain until date must be in the future!")
        meta["retention"] = {"mode": mode, "until": when}
    hold = headers.get("x-amz-object-lock-legal-hold")
    if hold is not None:
        if hold not in ("ON", "OFF"):
            raise S3Error("InvalidArgument", "Legal Hold must be either of 'ON' or 'OFF'",
                          extra={"ArgumentName": "x-amz-object-lock-legal-hold",
                                 "ArgumentValue": hold})
        meta["legal_hold"] = hold == "ON"
    return meta


def require_digest_for_lock(api, call, meta, what="Put Object"):
    """S3 wants a body digest on writes that Object Lock will protect."""
    bucket = api.objects.bucket(call.bucket)
    if not lock.enabled(bucket):
        return
    if (meta.get("retention") or lock.default_rule(bucket)) and not has_digest(call.headers):
        raise S3Error("InvalidRequest", "Content-MD5 OR x-amz-checksum- HTTP header is "
                      f"required for {what} requests with Object Lock parameters")


def lock_headers(version):
    """The ``x-amz-object-lock-*`` headers of a GET/HEAD response."""
    headers = {}
    held = lock.retention(version.meta)
    if held is not None:
        headers["x-amz-object-lock-mode"] = held[0]
        headers["x-amz-object-lock-retain-until-date"] = xml.iso8601(held[1])
    if "legal_hold" in version.meta:
        headers["x-amz-object-lock-legal-hold"] = "ON" if version.meta["legal_hold"] else "OFF"
    return headers


async def put_object_lock_configuration(api, call):
    document = await read_document(api, call, "ObjectLockConfiguration",
                                   require_digest=True)
    if only(document, "ObjectLockEnabled") != "Enabled":
        raise S3Error("MalformedXML")
    rule = None
    rule_element = document.find("Rule")
    if rule_element is not None:
        retention = rule_element.find("DefaultRetention")
        if retention is None:
            raise S3Error("MalformedXML")
        mode = only(retention, "Mode")
        days, years = only(retention, "Days"), only(retention, "Years")
        if mode not in lock.MODES or (days is None) == (years is None):
            raise S3Error("MalformedXML")
        count = integer(days if days is not None else years)
        if count <= 0:
            raise S3Error("InvalidRetentionPeriod",
                          extra={"ArgumentName": "Days" if days is not None else "Years",
                                 "ArgumentValue": str(count)})
        if count > (MAX_DEFAULT_DAYS if days is not None else MAX_DEFAULT_YEARS):
            raise S3Error("InvalidArgument", "Default retention period is too large.",
                          extra={"ArgumentName": "Days" if days is not None else "Years",
                                 "ArgumentValue": str(count)})
        rule = {"mode": mode, "days" if days is not None else "years": count}

    def change(settings):
        if not settings.get("object_lock", {}).get("enabled") \
                and settings.get("versioning") != versioning.ENABLED:
            raise S3Error("InvalidBucketState", "Versioning must be 'Enabled' on the "
                          "bucket to apply a Object Lock configuration")
        settings["object_lock"] = {"enabled": True}
        if rule is not None:
            settings["object_lock"]["rule"] = rule
        return settings
    await api.objects.update_bucket_settings(call.bucket, change)
    return Response()


async def get_object_lock_configuration(api, call):
    bucket = api.objects.bucket(call.bucket)
    if not lock.enabled(bucket):
        raise S3Error("ObjectLockConfigurationNotFoundError",
                      extra={"BucketName": call.bucket})
    children = [("ObjectLockEnabled", "Enabled")]
    rule = lock.default_rule(bucket)
    if rule is not None:
        period = ("Days", rule["days"]) if "days" in rule else ("Years", rule["years"])
        children.append(("Rule", [("DefaultRetention", [("Mode", rule["mode"]), period])]))
    return Response(headers={"content-type": "application/xml"},
                    body=xml.document("ObjectLockConfiguration", children))


async def put_object_retention(api, call):
    version_id = requested_version(call)
    document = await read_document(api, call, "Retention", require_digest=True)
    mode, until = only(document, "Mode"), only(document, "RetainUntilDate")
    if (mode is None) != (until is None):
        raise S3Error("MalformedXML")
    retention = None
    if mode is not None:
        if mode not in lock.MODES:
            raise S3Error("MalformedXML")
        when = parse_date(until)
        if when is None:
            raise S3Error("MalformedXML")
        if when <= api.clock.seconds():
            raise S3Error("InvalidArgument", "The retain until date must be in the future!",
                          extra={"ArgumentName": "RetainUntilDate", "ArgumentValue": until})
        retention = (mode, when)
    version = await api.objects.set_retention(
        call.bucket, call.key, version_id, retention, bypass_governance(api, call))
    return Response(headers=version_headers(api, call.bucket, version))


async def get_object_retention(api, call):
    version = await api.objects.lock_protected_version(call.bucket, call.key,
                                                       requested_version(call))
    held = lock.retention(version.meta)
    if held is None:
        raise S3Error("NoSuchObjectLockConfiguration")
    return Response(headers={"content-type": "application/xml"},
                    body=xml.document("Retention", [
                        ("Mode", held[0]), ("RetainUntilDate", xml.iso8601(held[1]))]))


async def put_object_legal_hold(api, call):
    version_id = requested_version(call)
    document = await read_document(api, call, "LegalHold", require_digest=True)
    status = only(document, "Status")
    if status not in ("ON", "OFF"):
        raise S3Error("MalformedXML")
    version = await api.objects.set_legal_hold(call.bucket, call.key, version_id,
                                               status == "ON")
    return Response(headers=version_headers(api, call.bucket, version))


async def get_object_legal_hold(api, call):
    version = await api.objects.lock_protected_version(call.bucket, call.key,
                                                       requested_version(call))
    if "legal_hold" not in version.meta:
        raise S3Error("NoSuchObjectLockConfiguration")
    return Response(headers={"content-type": "application/xml"},
                    body=xml.document("LegalHold", [
                        ("Status", "ON" if version.meta["legal_hold"] else "OFF")]))
