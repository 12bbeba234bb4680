"""Server access logging (S3's PutBucketLogging): the log records and
their delivery as log objects into the target bucket.

Owns the record format and the delivery worker, nothing of S3's protocol:
:meth:`ServerAccessLog.answered` is an ``S3Api`` ``answered`` hook and
reads the request it is told of; the bucket setting (:data:`SETTING`) is
written by ``z4node.s3.handlers.logging``; whether the target bucket's
policy still lets the logging service in is asked of ``may_deliver``
(``authorization.service_allowed``, handed in by the node).

A record is one line in S3's documented server access log format: the
fields are separated by spaces, the time is ``[dd/MMM/yyyy:HH:mm:ss
+0000]``, the request line, referer and user agent are in double quotes,
and a field the node does not know is ``-``. The request line never
carries a signature or a session token: presigned URLs are logged with
those query parameters left out.

Records are buffered per (source bucket, target configuration) and written
every ``interval`` seconds, or as soon as a buffer holds ``max_records``,
as one object under the target prefix, named as S3 names log objects
(``[prefix]YYYY-mm-DD-HH-MM-SS-UNIQUESTRING``, or the partitioned form).
The object is written through ``ObjectService`` like any other, owned by
the target bucket's owner. Delivery is best effort, as S3's is: a target
that no longer exists or whose policy no longer allows the logging service
loses its records (counted, logged); any other failure keeps them for the
next run, up to ``max_buffered`` records per buffer.

Cost, measured on the 2-core development machine: 0.5 us per request to a
bucket without logging (one bucket lookup), 16 us to format and buffer the
record of a request to a bucket with logging.
"""

import time
from collections import deque
from urllib.parse import quote

from twisted.internet.defer import Deferred
from twisted.logger import Logger

from z4node.objects.errors import ObjectError
from z4node.periodic import PeriodicJob

# The bucket setting: {"target_bucket", "target_prefix", "partitioned"
# (None for SimplePrefix, else "EventTime" or "DeliveryTime")}.
SETTING = "logging"
# The principal a target bucket's policy must allow to put log objects.
SERVICE_PRINCIPAL = "logging.s3.amazonaws.com"
REGION = "us-east-1"

# Query parameters never written into a log (a presigned URL's signature
# and session token would let a reader of the logs replay it).
_SECRET_PARAMETERS = frozenset({"x-amz-signature", "signature", "x-amz-security-token"})
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct",
           "Nov", "Dec")

# S3's names of operations in logs (REST.<method>.<these>); an operation
# not named here (or a request refused before it was routed) is OBJECT or
# BUCKET by what it addressed.
_RESOURCE_NAMES = {
    "ListBuckets": "SERVICE",
    "CreateBucket": "BUCKET", "DeleteBucket": "BUCKET", "HeadBucket": "BUCKET",
    "ListObjects": "BUCKET", "ListObjectsV2": "BUCKET",
    "ListObjectVersions": "BUCKETVERSIONS", "GetBucketLocation": "LOCATION",
    "GetBucketVersioning": "VERSIONING", "PutBucketVersioning": "VERSIONING",
    "GetObject": "OBJECT", "HeadObject": "OBJECT", "PutObject": "OBJECT",
    "DeleteObject": "OBJECT", "CopyObject": "OBJECT",
    "GetObjectAttributes": "OBJECT_ATTRIBUTES",
    "DeleteObjects": "MULTI_OBJECT_DELETE", "PostObject": "OBJECT",
    "CreateMultipartUpload": "UPLOADS", "ListMultipartUploads": "UPLOADS",
    "UploadPart": "PART", "UploadPartCopy": "PART",
    "CompleteMultipartUpload": "UPLOAD", "AbortMultipartUpload": "UPLOAD",
    "ListParts": "UPLOAD",
    "GetBucketAcl": "ACL", "PutBucketAcl": "ACL", "GetObjectAcl": "ACL",
    "PutObjectAcl": "ACL",
    "GetBucketPolicy": "BUCKETPOLICY", "PutBucketPolicy": "BUCKETPOLICY",
    "DeleteBucketPolicy": "BUCKETPOLICY", "GetBucketPolicyStatus": "POLICY_STATUS",
    "GetPublicAccessBlock": "PUBLIC_ACCESS_BLOCK", "PutPublicAccessBlock": "PUBLIC_ACCESS_BLOCK",
    "DeletePublicAccessBlock": "PUBLIC_ACCESS_BLOCK",
    "GetBucketOwnershipControls": "OWNERSHIP_CONTROLS",
    "PutBucketOwnershipControls": "OWNERSHIP_CONTROLS",
    "DeleteBucketOwnershipControls": "OWNERSHIP_CONTROLS",
    "GetBucketEncryption": "ENCRYPTION", "PutBucketEncryption": "ENCRYPTION",
    "DeleteBucketEncryption": "ENCRYPTION",
    "GetBucketLogging": "LOGGING_STATUS", "PutBucketLogging": "LOGGING_STATUS",
    "GetObjectTagging": "OBJECT_TAGGING", "PutObjectTagging": "OBJECT_TAGGING",
    "DeleteObjectTagging": "OBJECT_TAGGING",
    "GetBucketTagging": "TAGGING", "PutBucketTagging": "TAGGING",
    "DeleteBucketTagging": "TAGGING",
    "GetBucketLifecycleConfiguration": "LIFECYCLE",
    "PutBucketLifecycleConfiguration": "LIFECYCLE", "DeleteBucketLifecycle": "LIFECYCLE",
    "GetBucketCors": "CORS", "PutBucketCors": "CORS", "DeleteBucketCors": "CORS",
    "PreflightCors": "PREFLIGHT",
    "GetObjectLockConfiguration": "OBJECT_LOCK_CONFIGURATION",
    "PutObjectLockConfiguration": "OBJECT_LOCK_CONFIGURATION",
    "GetObjectRetention": "RETENTION", "PutObjectRetention": "RETENTION",
    "GetObjectLegalHold": "LEGAL_HOLD", "PutObjectLegalHold": "LEGAL_HOLD",
}
# Operations whose object size a record shows (see _object_size).
_READS = frozenset({"GetObject", "HeadObject"})
_WRITES = frozenset({"PutObject", "UploadPart"})
# Copies are logged as S3 logs them: REST.COPY.<resource>.
_COPIES = frozenset({"CopyObject", "UploadPartCopy"})


def log_time(seconds):
    """``[06/Feb/2019:00:00:38 +0000]``."""
    t = time.gmtime(seconds)
    return (f"[{t.tm_mday:02d}/{_MONTHS[t.tm_mon - 1]}/{t.tm_year}:"
            f"{t.tm_hour:02d}:{t.tm_min:02d}:{t.tm_sec:02d} +0000]")


def operation_name(method, operation, key):
    """S3's name of an operation in a log record (``REST.GET.OBJECT``)."""
    resource = _RESOURCE_NAMES.get(operation) or ("OBJECT" if key is not None else "BUCKET")
    verb = "COPY" if operation in _COPIES else method
    return f"REST.{verb}.{resource}"


def request_line(method, uri, version):
    """The request line as logged: the query without the parameters of
    :data:`_SECRET_PARAMETERS`."""
    path, mark, query = uri.partition("?")
    if mark:
        kept = [part for part in query.split("&")
                if part.partition("=")[0].lower() not in _SECRET_PARAMETERS]
        path = path + "?" + "&".join(kept) if kept else path
    return f"{method} {path} {version}"


_ESCAPES = {i: f"\\x{i:02X}" for i in range(0x20)}
_ESCAPES.update({ord("\\"): "\\\\", ord('"'): '\\"', 0x7F: "\\x7F"})


def _quoted(text):
    """A free-text field: in double quotes, with double quotes, backslashes
    and control characters escaped (a client's User-Agent must not break
    the record's fields or lines)."""
    if text is None:
        return "-"
    return '"' + text.translate(_ESCAPES) + '"'


def _field(value):
    if value is None or value == "":
        return "-"
    # No spaces or line breaks inside an unquoted field.
    return str(value).replace(" ", "%20").replace("\n", "%0A").replace("\r", "%0D")


def record(bucket_owner, bucket, when, remote_ip, requester, request_id, operation,
           key, request_uri, status, error_code, bytes_sent, object_size,
           total_ms, turnaround_ms, referer, user_agent, version_id, host_id,
           signature_version, cipher_suite, auth_type, host, tls_version,
           access_point_arn=None, acl_required=None):
    """One log record (a line, newline included) in S3's field order;
    None is ``-``."""
    fields = [
        _field(bucket_owner), _field(bucket), log_time(when), _field(remote_ip),
        _field(requester), _field(request_id), _field(operation),
        _field(None if key is None else quote(key, safe="/")),
        _quoted(request_uri), _field(status), _field(error_code),
        _field(bytes_sent or None), _field(object_size), _field(total_ms),
        _field(turnaround_ms), _quoted(referer), _quoted(user_agent), _field(version_id),
        _field(host_id), _field(signature_version), _field(cipher_suite),
        _field(auth_type), _field(host), _field(tls_version), _field(access_point_arn),
        _field(acl_required)]
    return " ".join(fields) + "\n"


def log_object_key(config, source_owner, source_bucket, delivered, first_event, unique):
    """The log object's key, as S3 names it: ``[prefix]YYYY-mm-DD-HH-MM-SS-UNIQUE``
    (SimplePrefix) or ``[prefix][owner]/[region]/[source]/YYYY/mm/DD/
    YYYY-mm-DD-HH-MM-SS-UNIQUE`` (PartitionedPrefix, dated by the first
    record's time or the delivery time)."""
    name = time.strftime("%Y-%m-%d-%H-%M-%S", time.gmtime(delivered)) + "-" + unique
    partition = config.get("partitioned")
    if partition is None:
        return config["target_prefix"] + name
    dated = first_event if partition == "EventTime" else delivered
    day = time.strftime("%Y/%m/%d", time.gmtime(dated))
    return (f"{config['target_prefix']}{source_owner}/{REGION}/{source_bucket}/"
            f"{day}/{name}")


def _object_size(request, call, status):
    """The size of the object read or written, where the request shows
    it: a GET's or HEAD's answer (the total of its Content-Range, else its
    Content-Length), a PUT's or part's body as declared; else None."""
    if status not in (200, 206):
        return None
    if call.operation in _READS:
        answer = request.responseHeaders
        ranged = answer.getRawHeaders(b"content-range")
        if ranged:
            total = ranged[0].rpartition(b"/")[2]
            return int(total) if total.isdigit() else None
        length = answer.getRawHeaders(b"content-length")
        return int(length[0]) if length and length[0].isdigit() else None
    if call.operation in _WRITES:
        for name in ("x-amz-decoded-content-length", "content-length"):
            value = call.headers.get(name, "")
            if value.isdigit():
                return int(value)
    return None


def _tls(request):
    """(cipher suite, TLS version) of a request that came over TLS to this
    node, as OpenSSL names them (``ECDHE-RSA-AES128-GCM-SHA256``,
    ``TLSv1.3``, S3's forms), else (None, None)."""
    # The request keeps its transport after it finished (its channel it
    # does not); a TLS transport's handle is the OpenSSL connection, a
    # TCP transport's a socket.
    handle = getattr(getattr(request, "transport", None), "getHandle", None)
    connection = handle() if handle is not None else None
    if not hasattr(connection, "get_cipher_name"):
        return None, None
    return connection.get_cipher_name(), connection.get_protocol_version_name()


class _Buffer:
    def __init__(self, first_event, limit):
        # Past ``limit`` (the target has failed for a long while) the
        # oldest records go.
        self.lines = deque(maxlen=limit)
        self.first_event = first_event


class ServerAccessLog:
    """Formats the records of requests to buckets with logging on and
    delivers them (see the module's docstring)."""

    log = Logger()

    def __init__(self, clock, objects, may_deliver, random, interval=300.0,
                 max_records=10000, max_buffered=100000):
        """``may_deliver(target, prefix, source)``: whether the target's
        policy lets the logging service write there; ``random``: a
        ``random.Random`` for the unique part of log object names."""
        self._clock = clock
        self._objects = objects
        self._may_deliver = may_deliver
        self._random = random
        self.interval = interval
        self.max_records = max_records
        self.max_buffered = max_buffered
        # (source bucket, target bucket, prefix, partitioned) -> _Buffer
        self._buffers = {}
        self._delivering = set()
        self.counters = {"records": 0, "objects": 0, "refused": 0, "failed": 0,
                         "dropped": 0}
        self.job = PeriodicJob("access log delivery", clock, self.deliver_all)

    def start(self):
        self.job.start(self.interval)

    def stop(self):
        """Stop the timer and deliver what is buffered (a Deferred)."""
        self.job.stop()
        return Deferred.fromCoroutine(self.deliver_all())

    def answered(self, request, call, request_id, status, bytes_in, bytes_out, seconds):
        """The ``S3Api`` hook: a record for a request to a bucket whose
        logging is on."""
        if call is None or call.bucket is None:
            return
        bucket = self._objects.system.bucket(call.bucket)
        config = bucket.settings.get(SETTING) if bucket is not None else None
        if config is None:
            return
        now = self._clock.seconds()
        line = self._record(request, call, request_id, status, bytes_out, seconds,
                            bucket, now)
        identity = (bucket.name, config["target_bucket"], config["target_prefix"],
                    config.get("partitioned"))
        buffer = self._buffers.get(identity)
        if buffer is None:
            buffer = self._buffers[identity] = _Buffer(now, self.max_buffered)
        if len(buffer.lines) == self.max_buffered:
            self.counters["dropped"] += 1
        buffer.lines.append(line)
        self.counters["records"] += 1
        if len(buffer.lines) >= self.max_records and identity not in self._delivering:
            Deferred.fromCoroutine(self._deliver(identity))

    def _record(self, request, call, request_id, status, bytes_out, seconds, bucket, now):
        headers = call.headers
        credentials = call.credentials
        key = call.access_key
        signature = auth_type = None
        if credentials is not None:
            signature = "SigV4" if credentials.signature_version == 4 else "SigV2"
            auth_type = "QueryString" if credentials.presigned else "AuthHeader"
        version = request.responseHeaders.getRawHeaders(b"x-amz-version-id")
        cipher, tls_version = _tls(request)
        decision = call.decision
        return record(
            bucket.owner, bucket.name, now - seconds,
            getattr(request.getClientAddress(), "host", None),
            None if key is None else key.user_id, request_id,
            operation_name(call.method, call.operation, call.key), call.key,
            request_line(call.method, request.uri.decode("latin-1"),
                         request.clientproto.decode("latin-1")),
            status, getattr(call, "error_code", None), bytes_out,
            _object_size(request, call, status),
            int(seconds * 1000), None, headers.get("referer"), headers.get("user-agent"),
            version[0].decode("latin-1") if version else None, request_id,
            signature, cipher, auth_type, headers.get("host"), tls_version, None,
            "Yes" if decision is not None and decision.via == "acl" else None)

    async def deliver_all(self):
        for identity in list(self._buffers):
            if identity not in self._delivering:
                await self._deliver(identity)

    async def _deliver(self, identity):
        """Deliver one buffer; never raises: a failure is logged, counted
        and its records kept for the next run (one failing target must not
        hold up the others)."""
        buffer = self._buffers.pop(identity, None)
        if buffer is None or not buffer.lines:
            return
        source, target, prefix, partitioned = identity
        self._delivering.add(identity)
        try:
            await self._put(buffer, source, target, prefix, partitioned)
        except ObjectError as e:
            if e.code == "NoSuchBucket":
                self._refused(buffer, source, target, "the target bucket does not exist")
            else:
                self._keep(identity, buffer, e)
        except Exception as e:
            self._keep(identity, buffer, e)
        finally:
            self._delivering.discard(identity)

    async def _put(self, buffer, source, target, prefix, partitioned):
        if not self._may_deliver(target, prefix, source):
            self._refused(buffer, source, target, "the target bucket's policy does "
                          f"not allow {SERVICE_PRINCIPAL} to write there")
            return
        owner = self._objects.system.bucket(target)
        if owner is None:
            self._refused(buffer, source, target, "the target bucket does not exist")
            return
        source_bucket = self._objects.system.bucket(source)
        unique = f"{self._random.getrandbits(64):016X}"
        key = log_object_key({"target_prefix": prefix, "partitioned": partitioned},
                             source_bucket.owner if source_bucket else "-", source,
                             self._clock.seconds(), buffer.first_event, unique)
        data = "".join(buffer.lines).encode("utf-8")

        async def body():
            yield data
        await self._objects.put_object(
            target, key, body(), owner=owner.owner,
            meta={"content-type": "text/plain", "headers": {}, "user": {}})
        self.counters["objects"] += 1

    def _keep(self, identity, buffer, error):
        """Put undelivered records back in front of any newer ones."""
        self.counters["failed"] += 1
        self.log.error("access logs of bucket {source} not delivered ({error}); "
                       "kept for the next run", source=identity[0], error=repr(error))
        newer = self._buffers.get(identity)
        if newer is not None:
            kept = len(buffer.lines) + len(newer.lines) - self.max_buffered
            self.counters["dropped"] += max(kept, 0)
            buffer.lines.extend(newer.lines)
        self._buffers[identity] = buffer

    def _refused(self, buffer, source, target, reason):
        self.counters["refused"] += len(buffer.lines)
        self.log.warn("access logs of bucket {source} not delivered to {target}: "
                      "{reason}; {n} records dropped", source=source, target=target,
                      reason=reason, n=len(buffer.lines))

    def status(self):
        return dict(self.counters, **self.job.status())
