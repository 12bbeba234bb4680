"""Server access logging of a bucket: PutBucketLogging / GetBucketLogging.

The configuration lives in the bucket's settings under
``access_logging.SETTING`` (so it replicates with the bucket's other
settings): the target bucket, the target prefix and the key format of the
log objects. ``z4node.objects.access_logging`` writes the records and
delivers them.

As in S3, the target bucket must exist and its policy must let the logging
service principal (``"Service": "logging.s3.amazonaws.com"``) put objects
under the target prefix; otherwise the request is refused with
InvalidTargetBucketForLogging. An empty ``BucketLoggingStatus`` turns
logging off.
"""

from z4node.objects import access_logging
from z4node.s3 import authorization, xml
from z4node.s3.api import Response
from z4node.s3.errors import S3Error
from z4node.s3.handlers.documents import only, read_document
from z4node.s3.router import MAX_KEY_BYTES

# The longest name a log object adds after the prefix (the partitioned
# form: a 64-digit owner id, the region, a 63-character bucket name, the
# date and the 16-digit unique part, with their separators).
_LONGEST_SUFFIX = 64 + 1 + len(access_logging.REGION) + 1 + 63 + 1 + 10 + 1 + 19 + 1 + 16

# GetBucketLogging answers in this namespace, as S3 does (not S3_NAMESPACE).
LOGGING_NAMESPACE = "http://doc.s3.amazonaws.com/2006-03-01"
_PARTITION_SOURCES = ("EventTime", "DeliveryTime")


def _key_format(enabled):
    """The TargetObjectKeyFormat asked for: None (SimplePrefix, the
    default) or the partition date source of a PartitionedPrefix."""
    formats = enabled.findall("TargetObjectKeyFormat")
    if not formats:
        return None
    if len(formats) > 1 or len(formats[0]) != 1:
        raise S3Error("MalformedXML")
    choice = formats[0][0]
    if choice.tag == "SimplePrefix":
        return None
    if choice.tag != "PartitionedPrefix":
        raise S3Error("MalformedXML")
    source = only(choice, "PartitionDateSource")
    source = "EventTime" if source is None else source.strip()
    if source not in _PARTITION_SOURCES:
        raise S3Error("MalformedXML")
    return source


def _refuse_target(api, source, target, prefix):
    bucket = api.system.bucket(target)
    if bucket is None:
        raise S3Error("InvalidTargetBucketForLogging",
                      "The target bucket for logging does not exist",
                      extra={"TargetBucket": target})
    if not authorization.service_allowed(api.system, access_logging.SERVICE_PRINCIPAL,
                                         "s3:PutObject", target, prefix, source):
        raise S3Error("InvalidTargetBucketForLogging",
                      "The target bucket's policy does not allow the logging service "
                      f"principal ({access_logging.SERVICE_PRINCIPAL}) s3:PutObject "
                      "under the target prefix",
                      extra={"TargetBucket": target})


async def put_bucket_logging(api, call):
    api.objects.bucket(call.bucket)
    document = await read_document(api, call, "BucketLoggingStatus", require_digest=True)
    if any(child.tag != "LoggingEnabled" for child in document) or len(document) > 1:
        raise S3Error("MalformedXML")
    if len(document) == 0:
        await api.objects.set_bucket_setting(call.bucket, access_logging.SETTING, None)
        return Response()
    enabled = document[0]
    known = {"TargetBucket", "TargetPrefix", "TargetGrants", "TargetObjectKeyFormat"}
    if any(child.tag not in known for child in enabled):
        raise S3Error("MalformedXML")
    target = only(enabled, "TargetBucket")
    prefix = only(enabled, "TargetPrefix")
    if target is None or prefix is None:
        raise S3Error("MalformedXML")
    target = target.strip()
    if len(prefix.encode("utf-8")) + _LONGEST_SUFFIX > MAX_KEY_BYTES:
        # Else every delivery would fail on the key's length.
        raise S3Error("InvalidArgument", "TargetPrefix is too long for the log object "
                      "keys", extra={"ArgumentName": "TargetPrefix",
                                     "ArgumentValue": prefix[:64]})
    if enabled.find("TargetGrants") is not None and len(enabled.find("TargetGrants")):
        # Log objects are the target bucket owner's, as under S3's
        # BucketOwnerEnforced; grants to others are not kept.
        raise S3Error("NotImplemented", "TargetGrants are not implemented: the target "
                      "bucket owner owns the log objects.")
    partition = _key_format(enabled)
    _refuse_target(api, call.bucket, target, prefix)
    config = {"target_bucket": target, "target_prefix": prefix, "partitioned": partition}
    await api.objects.set_bucket_setting(call.bucket, access_logging.SETTING, config)
    return Response()


async def get_bucket_logging(api, call):
    config = api.objects.bucket(call.bucket).settings.get(access_logging.SETTING)
    children = []
    if config is not None:
        if config["partitioned"] is None:
            key_format = [("SimplePrefix", [])]
        else:
            key_format = [("PartitionedPrefix",
                           [("PartitionDateSource", config["partitioned"])])]
        children.append(("LoggingEnabled", [
            ("TargetBucket", config["target_bucket"]),
            ("TargetPrefix", config["target_prefix"]),
            ("TargetObjectKeyFormat", key_format)]))
    return Response(headers={"content-type": "application/xml"},
                    body=xml.document("BucketLoggingStatus", children,
                                      namespace=LOGGING_NAMESPACE))
