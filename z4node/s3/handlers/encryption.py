"""Bucket default encryption: Put/Get/DeleteBucketEncryption.

On a node with a node key every object is encrypted (SSE-S3) whatever the
bucket says, as on S3 since 2023: a bucket without a configuration reports
the default rule, AES256, and deleting the configuration brings that
default back. The configuration is kept (and returned) for the tools that
set and check it. A node without a node key cannot encrypt: it has no
default rule to report and refuses to record one. An SSE-KMS rule
(``aws:kms`` with a KMSMasterKeyID, or none for the default KMS key) needs
the node's KMS master key, not a node key: a write that names no encryption
then gets SSE-KMS with that key (``sse.kms_request``). SSE-C is per request
and never a bucket default (as on S3).
"""

from z4node.s3 import sse, xml
from z4node.s3.api import Response
from z4node.s3.errors import S3Error
from z4node.s3.handlers.documents import read_document

SETTING = "encryption"
_DEFAULT = {"algorithm": sse.AES256, "bucket_key": False}


async def put_bucket_encryption(api, call):
    api.objects.bucket(call.bucket)
    document = await read_document(api, call, "ServerSideEncryptionConfiguration")
    rules = document.findall("Rule")
    if len(rules) != 1:
        raise S3Error("MalformedXML", "A server side encryption configuration has "
                                      "exactly one Rule.")
    default = rules[0].find("ApplyServerSideEncryptionByDefault")
    if default is None:
        raise S3Error("MalformedXML")
    algorithm = (xml.text(default, "SSEAlgorithm") or "").strip()
    key_id = (xml.text(default, "KMSMasterKeyID") or "").strip() or None
    bucket_key = (xml.text(rules[0], "BucketKeyEnabled", "false") or "").strip().lower()
    config = {"algorithm": algorithm, "bucket_key": bucket_key == "true"}
    if algorithm == sse.AWS_KMS:
        # The key must exist now (S3 would fail every write later); its ARN
        # is what is kept and reported.
        config["key_id"] = (await api.objects.kms_request(key_id)).arn
    elif algorithm in sse.KMS:
        raise S3Error("NotImplemented", sse.NO_DSSE)
    elif algorithm != sse.AES256:
        raise S3Error("MalformedXML", f"SSEAlgorithm {algorithm!r} is not AES256 or aws:kms.")
    elif key_id is not None:
        raise S3Error("InvalidArgument", "a KMSMasterKeyID is allowed only if "
                      "SSEAlgorithm is aws:kms.",
                      extra={"ArgumentName": "ApplyServerSideEncryptionByDefault"})
    elif not api.objects.encrypts_at_rest:
        raise S3Error("NotImplemented", sse.NO_NODE_KEY)
    await api.system.update_bucket_settings(
        call.bucket, lambda settings: settings.__setitem__(SETTING, config))
    return Response()


async def get_bucket_encryption(api, call):
    bucket = api.objects.bucket(call.bucket)
    config = bucket.settings.get(SETTING)
    if config is None:
        if not api.objects.encrypts_at_rest:
            raise S3Error("ServerSideEncryptionConfigurationNotFoundError",
                          extra={"BucketName": call.bucket})
        config = _DEFAULT
    rule = [("SSEAlgorithm", config["algorithm"])]
    if config.get("key_id"):
        rule.append(("KMSMasterKeyID", config["key_id"]))
    body = xml.document("ServerSideEncryptionConfiguration", [
        ("Rule", [
            ("ApplyServerSideEncryptionByDefault", rule),
            ("BucketKeyEnabled", bool(config.get("bucket_key"))),
        ]),
    ])
    return Response(headers={"content-type": "application/xml"}, body=body)


async def delete_bucket_encryption(api, call):
    api.objects.bucket(call.bucket)
    await api.system.update_bucket_settings(
        call.bucket, lambda settings: settings.pop(SETTING, None))
    return Response(204)


