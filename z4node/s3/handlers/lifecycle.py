"""Lifecycle configuration: Put/Get/DeleteBucketLifecycleConfiguration,
validated with the errors S3 answers, and the ``x-amz-expiration`` /
``x-amz-abort-date`` headers that tell a client when a rule will act.
The rules' meaning and the worker that applies them are the object
layer's (``z4node.objects.lifecycle``)."""

import base64
import os
from datetime import datetime, timezone
from urllib.parse import quote

from z4node.objects import lifecycle
from z4node.s3 import integers, xml
from z4node.s3.api import Response, http_date
from z4node.s3.errors import S3Error
from z4node.s3.handlers.documents import integer, only, read_document
from z4node.s3.handlers.tagging import MAX_OBJECT_TAGS, validate

# S3's limits on a lifecycle configuration.
MAX_RULES = 1000
MAX_ID_LENGTH = 255
MAX_NEWER_NONCURRENT = 100
# Our own bound on a rule's days (2,700 years): more would put expiry
# dates past the year 9999, which no HTTP date or XML timestamp can carry,
# and every GET in the bucket would fail to say when its object expires.
MAX_DAYS = 1_000_000


def _positive(text, message, name):
    value = integer(text, MAX_DAYS)
    if value <= 0:
        raise S3Error("InvalidArgument", message,
                      extra={"ArgumentName": name, "ArgumentValue": str(value)})
    return value


def _tag(element):
    key, value = xml.text(element, "Key"), xml.text(element, "Value")
    if key is None or value is None:
        raise S3Error("MalformedXML")
    return key, value


def _parse_filter(rule_element, rule):
    legacy = rule_element.find("Prefix")
    found = rule_element.find("Filter")
    if legacy is not None and found is not None:
        raise S3Error("MalformedXML")
    if legacy is not None:
        rule.prefix = legacy.text or ""
        rule.filter_style = "legacy"
        return
    if found is None or len(found) == 0:
        rule.filter_style = "empty"
        return
    if len(found) > 1:
        raise S3Error("MalformedXML")
    part = found[0]
    tags = []
    if part.tag == "And":
        rule.filter_style = "and"
        parts = list(part)
    else:
        rule.filter_style = {"Prefix": "prefix", "Tag": "tag",
                             "ObjectSizeGreaterThan": "size_greater_than",
                             "ObjectSizeLessThan": "size_less_than"}.get(part.tag)
        if rule.filter_style is None:
            raise S3Error("MalformedXML")
        parts = [part]
    seen = set()
    for element in parts:
        if element.tag != "Tag" and element.tag in seen:
            raise S3Error("MalformedXML")
        seen.add(element.tag)
        if element.tag == "Prefix":
            rule.prefix = element.text or ""
        elif element.tag == "Tag":
            tags.append(_tag(element))
        elif element.tag == "ObjectSizeGreaterThan":
            rule.size_greater_than = integer(element.text, integers.INT64_MAX)
        elif element.tag == "ObjectSizeLessThan":
            rule.size_less_than = integer(element.text, integers.INT64_MAX)
        else:
            raise S3Error("MalformedXML")
    if len({k for k, _ in tags}) != len(tags):
        raise S3Error("InvalidRequest", "Duplicate Tag Keys are not allowed.")
    rule.tags = validate(tags, MAX_OBJECT_TAGS)
    if rule.size_greater_than is not None and rule.size_less_than is not None \
            and rule.size_greater_than >= rule.size_less_than:
        raise S3Error("InvalidRequest", "ObjectSizeGreaterThan must be less than "
                      "ObjectSizeLessThan")


def _parse_date(text):
    try:
        moment = datetime.fromisoformat((text or "").strip())
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=timezone.utc)
        moment = moment.astimezone(timezone.utc)
    except (ValueError, OverflowError):
        # OverflowError: a zone that puts the UTC date past the year 9999.
        raise S3Error("InvalidArgument", "'Date' must be at midnight GMT") from None
    if (moment.hour, moment.minute, moment.second, moment.microsecond) != (0, 0, 0, 0):
        raise S3Error("InvalidArgument", "'Date' must be at midnight GMT")
    return moment.timestamp()


def _refuse_transitions(rule_element):
    """A transition moves objects to another storage class; the node has
    only STANDARD, so every transition names a class it does not have: a
    400 the client can act on (as MinIO answers a transition to a tier it
    does not know), after the same shape checks S3 makes."""
    for name in ("Transition", "NoncurrentVersionTransition"):
        for transition in rule_element.findall(name):
            storage_class = only(transition, "StorageClass")
            if storage_class is None:
                raise S3Error("MalformedXML")
            raise S3Error("InvalidStorageClass", "The storage class you specified is not "
                          f"valid: this node stores every object as STANDARD and cannot "
                          f"transition objects to {storage_class.strip()!r}",
                          extra={"StorageClassRequested": storage_class.strip()})


def _parse_rule(element):
    rule_id = only(element, "ID")
    if rule_id is None or rule_id == "":
        # S3 names a rule that has no ID itself.
        rule_id = base64.b32encode(os.urandom(30)).decode("ascii").rstrip("=")
    if len(rule_id) > MAX_ID_LENGTH:
        raise S3Error("InvalidArgument", "ID length should not exceed allowed limit of 255",
                      extra={"ArgumentName": "ID", "ArgumentValue": rule_id})
    rule = lifecycle.Rule(rule_id)
    status = only(element, "Status")
    if status not in ("Enabled", "Disabled"):
        raise S3Error("MalformedXML")
    rule.enabled = status == "Enabled"
    _parse_filter(element, rule)
    _refuse_transitions(element)
    actions = 0
    expiration = element.findall("Expiration")
    if len(expiration) > 1:
        raise S3Error("MalformedXML")
    if expiration:
        actions += 1
        days = only(expiration[0], "Days")
        date = only(expiration[0], "Date")
        marker = only(expiration[0], "ExpiredObjectDeleteMarker")
        if (days is not None) + (date is not None) + (marker is not None) != 1:
            raise S3Error("MalformedXML")
        if days is not None:
            rule.expiration_days = _positive(
                days, "'Days' for Expiration action must be a positive integer", "Days")
        elif date is not None:
            rule.expiration_date = _parse_date(date)
        else:
            if marker.strip().lower() not in ("true", "false"):
                raise S3Error("MalformedXML")
            rule.expired_object_delete_marker = marker.strip().lower() == "true"
            if rule.tags:
                raise S3Error("InvalidRequest", "ExpiredObjectDeleteMarker cannot be "
                              "specified with a Tag filter.")
    noncurrent = element.findall("NoncurrentVersionExpiration")
    if len(noncurrent) > 1:
        raise S3Error("MalformedXML")
    if noncurrent:
        actions += 1
        days = only(noncurrent[0], "NoncurrentDays")
        if days is None:
            raise S3Error("MalformedXML")
        rule.noncurrent_days = _positive(
            days, "'NoncurrentDays' for NoncurrentVersionExpiration action must be a "
            "positive integer", "NoncurrentDays")
        newer = only(noncurrent[0], "NewerNoncurrentVersions")
        if newer is not None:
            rule.newer_noncurrent_versions = _positive(
                newer, "'NewerNoncurrentVersions' for NoncurrentVersionExpiration action "
                "must be a positive integer", "NewerNoncurrentVersions")
            if rule.newer_noncurrent_versions > MAX_NEWER_NONCURRENT:
                raise S3Error("InvalidArgument", "'NewerNoncurrentVersions' for "
                              "NoncurrentVersionExpiration action must not exceed 100",
                              extra={"ArgumentName": "NewerNoncurrentVersions"})
    abort = element.findall("AbortIncompleteMultipartUpload")
    if len(abort) > 1:
        raise S3Error("MalformedXML")
    if abort:
        actions += 1
        days = only(abort[0], "DaysAfterInitiation")
        if days is None:
            raise S3Error("MalformedXML")
        rule.abort_upload_days = _positive(
            days, "'DaysAfterInitiation' for AbortIncompleteMultipartUpload action must "
            "be a positive integer", "DaysAfterInitiation")
        if rule.tags:
            raise S3Error("InvalidRequest",
                          "AbortIncompleteMultipartUpload cannot be specified with Tags.")
        if rule.size_greater_than is not None or rule.size_less_than is not None:
            raise S3Error("InvalidRequest", "AbortIncompleteMultipartUpload cannot be "
                          "specified with an object size filter.")
    if not actions:
        raise S3Error("InvalidRequest", "At least one action needs to be specified in a rule")
    return rule


def parse_configuration(document):
    """A LifecycleConfiguration document -> the rule dicts the bucket keeps."""
    elements = document.findall("Rule")
    if not elements:
        raise S3Error("MalformedXML")
    if len(elements) > MAX_RULES:
        raise S3Error("InvalidRequest", "The number of lifecycle rules should not exceed "
                      f"allowed limit of {MAX_RULES} rules")
    rules = [_parse_rule(element) for element in elements]
    if len({r.id for r in rules}) != len(rules):
        raise S3Error("InvalidArgument", "Rule ID must be unique. Found same ID for more "
                      "than one rule", extra={"ArgumentName": "ID"})
    return [r.to_dict() for r in rules]


def _filter_children(rule):
    tags = [("Tag", [("Key", k), ("Value", v)]) for k, v in rule.tags.items()]
    parts = {"prefix": [("Prefix", rule.prefix)], "tag": tags,
             "size_greater_than": [("ObjectSizeGreaterThan", rule.size_greater_than)],
             "size_less_than": [("ObjectSizeLessThan", rule.size_less_than)]}
    if rule.filter_style == "legacy":
        return [("Prefix", rule.prefix)]
    if rule.filter_style == "empty":
        return [("Filter", [])]
    if rule.filter_style == "and":
        inner = []
        if rule.prefix:
            inner.append(("Prefix", rule.prefix))
        inner += tags
        if rule.size_greater_than is not None:
            inner.append(("ObjectSizeGreaterThan", rule.size_greater_than))
        if rule.size_less_than is not None:
            inner.append(("ObjectSizeLessThan", rule.size_less_than))
        return [("Filter", [("And", inner)])]
    return [("Filter", parts[rule.filter_style])]


def _rule_children(rule):
    children = [("ID", rule.id)] + _filter_children(rule)
    children.append(("Status", "Enabled" if rule.enabled else "Disabled"))
    if rule.expiration_days is not None:
        children.append(("Expiration", [("Days", rule.expiration_days)]))
    elif rule.expiration_date is not None:
        children.append(("Expiration", [("Date", xml.iso8601(rule.expiration_date))]))
    elif rule.expired_object_delete_marker is not None:
        children.append(("Expiration", [("ExpiredObjectDeleteMarker",
                                         rule.expired_object_delete_marker)]))
    if rule.noncurrent_days is not None:
        children.append(("NoncurrentVersionExpiration", [
            ("NoncurrentDays", rule.noncurrent_days),
            ("NewerNoncurrentVersions", rule.newer_noncurrent_versions)]))
    if rule.abort_upload_days is not None:
        children.append(("AbortIncompleteMultipartUpload",
                         [("DaysAfterInitiation", rule.abort_upload_days)]))
    return children


async def put_bucket_lifecycle(api, call):
    document = await read_document(api, call, "LifecycleConfiguration",
                                   require_digest=True)
    rules = parse_configuration(document)
    await api.objects.set_bucket_setting(call.bucket, "lifecycle", rules)
    return Response()


async def get_bucket_lifecycle(api, call):
    stored = api.objects.bucket(call.bucket).settings.get("lifecycle")
    if not stored:
        raise S3Error("NoSuchLifecycleConfiguration", extra={"BucketName": call.bucket})
    rules = [lifecycle.Rule.from_dict(value) for value in stored]
    return Response(headers={"content-type": "application/xml"},
                    body=xml.document("LifecycleConfiguration",
                                      [("Rule", _rule_children(r)) for r in rules]))


async def delete_bucket_lifecycle(api, call):
    await api.objects.set_bucket_setting(call.bucket, "lifecycle", None)
    return Response(204)


def expiration_headers(api, bucket_name, version):
    """``x-amz-expiration`` for a current version a rule will expire."""
    bucket = api.system.bucket(bucket_name)
    if bucket is None or not bucket.settings.get("lifecycle"):
        return {}
    found = lifecycle.current_expiration(lifecycle.rules_of(bucket), version,
                                         api.objects.lifecycle_day_seconds)
    if found is None:
        return {}
    due, rule_id = found
    return {"x-amz-expiration":
            f'expiry-date="{http_date(due)}", rule-id="{quote(rule_id, safe="")}"'}


def abort_headers(api, bucket_name, upload):
    """``x-amz-abort-date`` and ``x-amz-abort-rule-id`` for a new upload."""
    bucket = api.system.bucket(bucket_name)
    if bucket is None or not bucket.settings.get("lifecycle"):
        return {}
    found = lifecycle.upload_abort(lifecycle.rules_of(bucket), upload,
                                   api.objects.lifecycle_day_seconds)
    if found is None:
        return {}
    return {"x-amz-abort-date": http_date(found[0]), "x-amz-abort-rule-id": found[1]}
