"""Authorization: the one function that decides whether a request may do
what it asks. The pipeline calls :func:`authorize` once per request before
any handler runs; CopyObject and UploadPartCopy also ask
:func:`authorize_copy_source` about their source, and DeleteObjects asks
:func:`may_delete` about each key. All of them end in :func:`decide`, and
so does ``z4 key info``.

Who may do what, in the order :func:`decide` asks:

1. An explicit ``Deny`` in the bucket's policy that matches the request
   wins over everything, the admin key included: except that the admin
   key and keys with an owner grant may always read, replace and delete
   the policy itself, so a policy can never lock a bucket for good.
2. The admin key may do everything.
3. Any key may list its buckets and create buckets (it owns what it
   creates).
4. A key's grant on the bucket (``z4 bucket allow``): ``read`` (GET, HEAD,
   listings, reading object ACLs), ``write`` (PUT, DELETE, multipart) or
   ``owner`` (everything, bucket settings and deletion included). The
   bucket's creator holds an owner grant.
5. An ``Allow`` in the bucket's policy that matches the request.
6. The bucket's or the object's ACL, when the bucket's object ownership
   enables ACLs (it does not by default). Grants naming the bucket owner
   do not count: what the owner may do is its grant, which
   ``z4 bucket deny`` can take away.
7. Nothing else: AccessDenied. Anonymous requests get only what 1-6 give
   to everyone.

The bucket's Block Public Access settings (:data:`BLOCK_SETTING`, see
:func:`blocks`) act as AWS documents them, for every key, the admin
key included: ``IgnorePublicAcls`` takes the grants to AllUsers and
AuthenticatedUsers out of step 6; ``RestrictPublicBuckets`` makes a public
policy's Allow (step 5) count only for the bucket's own keys (the keys
that hold a grant on it); ``BlockPublicAcls`` refuses a request that
sets a public ACL (:func:`authorize` for ACL headers,
:func:`refuse_public_acl` for an ACL document); ``BlockPublicPolicy``
refuses to store a public policy (:func:`refuse_public_policy`).

:data:`_NEEDS` says what each operation needs: its S3 action (the name a
policy's ``Action`` matches), the grant that covers it, and the ACL
permission that covers it (on the bucket, or on the object).

Cost, measured on the 2-core development machine: :func:`decide` takes
2 us for a bucket without a policy and 12-30 us with a nine-statement
policy (conditions, variables, NotPrincipal). The admin key on a bucket
without a policy skips it altogether. An object is read (from the head
cache, usually) only when its ACL or its tags can change the answer.
"""

from dataclasses import dataclass
from datetime import datetime, timezone
from functools import lru_cache
from urllib.parse import parse_qsl

from twisted.logger import Logger

from z4node.objects.errors import ObjectError
from z4node.objects.kms import arn
from z4node.s3 import acl as acls
from z4node.s3 import policy as policies
from z4node.s3.errors import S3Error

READ = "read"
WRITE = "write"
OWNER = "owner"
ACCOUNT = "account"  # needs only a valid key
ANYONE = "anyone"  # needs nothing (CORS preflight requests are unsigned)

# The canonical user id S3 gives anonymous requesters; objects written
# anonymously (into a public-read-write bucket) are owned by it.
ANONYMOUS_USER_ID = "65a011a29cdf8ec533ec3d1ccaae921c"

log = Logger()


@dataclass(frozen=True)
class Need:
    """What one operation needs: ``action`` as bucket policies name it,
    the grant level that covers it and the ACL permission that covers it
    (``acl_on_object``: the object's ACL, else the bucket's)."""

    action: str
    grant: str
    acl: str | None = None
    acl_on_object: bool = False


_NEEDS = {
    "ListBuckets": Need("s3:ListAllMyBuckets", ACCOUNT),
    "CreateBucket": Need("s3:CreateBucket", ACCOUNT),
    "DeleteBucket": Need("s3:DeleteBucket", OWNER),
    "HeadBucket": Need("s3:ListBucket", READ, acls.READ),
    "GetBucketLocation": Need("s3:GetBucketLocation", READ),
    "GetBucketVersioning": Need("s3:GetBucketVersioning", READ),
    "ListObjects": Need("s3:ListBucket", READ, acls.READ),
    "ListObjectsV2": Need("s3:ListBucket", READ, acls.READ),
    "ListMultipartUploads": Need("s3:ListBucketMultipartUploads", WRITE, acls.READ),
    "GetObject": Need("s3:GetObject", READ, acls.READ, True),
    "HeadObject": Need("s3:GetObject", READ, acls.READ, True),
    "GetObjectAttributes": Need("s3:GetObjectAttributes", READ, acls.READ, True),
    "PutObject": Need("s3:PutObject", WRITE, acls.WRITE),
    "CopyObject": Need("s3:PutObject", WRITE, acls.WRITE),
    "DeleteObject": Need("s3:DeleteObject", WRITE, acls.WRITE),
    # Checked again for each key it names (may_delete).
    "DeleteObjects": Need("s3:DeleteObject", WRITE, acls.WRITE),
    "CreateMultipartUpload": Need("s3:PutObject", WRITE, acls.WRITE),
    "UploadPart": Need("s3:PutObject", WRITE, acls.WRITE),
    "UploadPartCopy": Need("s3:PutObject", WRITE, acls.WRITE),
    "CompleteMultipartUpload": Need("s3:PutObject", WRITE, acls.WRITE),
    "AbortMultipartUpload": Need("s3:AbortMultipartUpload", WRITE, acls.WRITE),
    "ListParts": Need("s3:ListMultipartUploadParts", WRITE, acls.WRITE),
    "GetBucketPolicy": Need("s3:GetBucketPolicy", OWNER),
    "PutBucketPolicy": Need("s3:PutBucketPolicy", OWNER),
    "DeleteBucketPolicy": Need("s3:DeleteBucketPolicy", OWNER),
    "GetBucketPolicyStatus": Need("s3:GetBucketPolicyStatus", OWNER),
    "GetBucketAcl": Need("s3:GetBucketAcl", OWNER, acls.READ_ACP),
    "PutBucketAcl": Need("s3:PutBucketAcl", OWNER, acls.WRITE_ACP),
    "GetObjectAcl": Need("s3:GetObjectAcl", READ, acls.READ_ACP, True),
    "PutObjectAcl": Need("s3:PutObjectAcl", OWNER, acls.WRITE_ACP, True),
    "GetPublicAccessBlock": Need("s3:GetBucketPublicAccessBlock", OWNER),
    "PutPublicAccessBlock": Need("s3:PutBucketPublicAccessBlock", OWNER),
    "DeletePublicAccessBlock": Need("s3:PutBucketPublicAccessBlock", OWNER),
    "GetBucketOwnershipControls": Need("s3:GetBucketOwnershipControls", OWNER),
    "PutBucketOwnershipControls": Need("s3:PutBucketOwnershipControls", OWNER),
    "DeleteBucketOwnershipControls": Need("s3:PutBucketOwnershipControls", OWNER),
    "GetBucketLogging": Need("s3:GetBucketLogging", OWNER),
    "PutBucketLogging": Need("s3:PutBucketLogging", OWNER),
    "PutBucketEncryption": OWNER,
    "GetBucketEncryption": OWNER,
    "DeleteBucketEncryption": OWNER,
    # Versioning, tagging, lifecycle, CORS, Object Lock and POST uploads.
    "ListObjectVersions": READ,
    "PutBucketVersioning": OWNER,
    "GetObjectTagging": READ,
    "PutObjectTagging": WRITE,
    "DeleteObjectTagging": WRITE,
    "GetBucketTagging": OWNER,
    "PutBucketTagging": OWNER,
    "DeleteBucketTagging": OWNER,
    "GetBucketLifecycleConfiguration": OWNER,
    "PutBucketLifecycleConfiguration": OWNER,
    "DeleteBucketLifecycle": OWNER,
    "GetBucketCors": OWNER,
    "PutBucketCors": OWNER,
    "DeleteBucketCors": OWNER,
    "PreflightCors": ANYONE,
    "GetObjectLockConfiguration": OWNER,
    "PutObjectLockConfiguration": OWNER,
    "GetObjectRetention": READ,
    "PutObjectRetention": WRITE,
    "GetObjectLegalHold": READ,
    "PutObjectLegalHold": WRITE,
    # A presigned POST: authorized once its form's signature names the key.
    "PostObject": WRITE,
    # Not a request of its own: what x-amz-bypass-governance-retention
    # needs beside the operation it comes with (asked through allows()).
    "BypassGovernanceRetention": OWNER,
}

# An entry of _NEEDS may also be a bare grant level (READ, WRITE, OWNER,
# ACCOUNT, ANYONE); its action is then named here, or "s3:" + operation.
ACTION_NAMES = {
    "ListObjectVersions": "s3:ListBucketVersions",
    "GetBucketLifecycleConfiguration": "s3:GetLifecycleConfiguration",
    "PutBucketLifecycleConfiguration": "s3:PutLifecycleConfiguration",
    "DeleteBucketLifecycle": "s3:PutLifecycleConfiguration",
    "GetBucketCors": "s3:GetBucketCORS",
    "PutBucketCors": "s3:PutBucketCORS",
    "DeleteBucketCors": "s3:PutBucketCORS",
    "GetBucketEncryption": "s3:GetEncryptionConfiguration",
    "PutBucketEncryption": "s3:PutEncryptionConfiguration",
    "DeleteBucketEncryption": "s3:PutEncryptionConfiguration",
    "DeleteBucketTagging": "s3:PutBucketTagging",
    "PostObject": "s3:PutObject",
    "GetObjectLockConfiguration": "s3:GetBucketObjectLockConfiguration",
    "PutObjectLockConfiguration": "s3:PutBucketObjectLockConfiguration",
}
# ...and the ACL permission that covers such an entry, if any.
_ACTION_ACLS = {
    "s3:ListBucketVersions": acls.READ,
    "s3:PutObject": acls.WRITE,
}

# With a versionId, S3 asks for the version form of these actions.
_VERSION_ACTIONS = {
    "s3:getobject": "s3:GetObjectVersion",
    "s3:deleteobject": "s3:DeleteObjectVersion",
    "s3:getobjectacl": "s3:GetObjectVersionAcl",
    "s3:putobjectacl": "s3:PutObjectVersionAcl",
    "s3:getobjecttagging": "s3:GetObjectVersionTagging",
    "s3:putobjecttagging": "s3:PutObjectVersionTagging",
    "s3:deleteobjecttagging": "s3:DeleteObjectVersionTagging",
}

# Operations whose missing object is AccessDenied, not NoSuchKey, for a
# requester that may not list the bucket (as S3 hides which keys exist).
_HIDES_MISSING_KEYS = frozenset({"GetObject", "HeadObject", "GetObjectAttributes",
                                 "GetObjectAcl"})

# Request headers that are condition keys of the same name (s3:<header>).
_HEADER_KEYS = (
    "x-amz-acl", "x-amz-grant-read", "x-amz-grant-write", "x-amz-grant-read-acp",
    "x-amz-grant-write-acp", "x-amz-grant-full-control",
    "x-amz-server-side-encryption", "x-amz-server-side-encryption-aws-kms-key-id",
    "x-amz-server-side-encryption-customer-algorithm", "x-amz-copy-source",
    "x-amz-metadata-directive", "x-amz-storage-class", "x-amz-content-sha256",
    "x-amz-object-ownership", "x-amz-website-redirect-location")
# Request headers that are condition keys of another name.
_RENAMED_HEADER_KEYS = {
    "if-match": "s3:if-match",
    "if-none-match": "s3:if-none-match",
    "x-amz-object-lock-mode": "s3:object-lock-mode",
    "x-amz-object-lock-retain-until-date": "s3:object-lock-retain-until-date",
    "x-amz-object-lock-legal-hold": "s3:object-lock-legal-hold",
}
# Query parameters of the listing operations that are condition keys.
_LISTING_KEYS = ("prefix", "delimiter", "max-keys")
_LISTINGS = frozenset({"ListObjects", "ListObjectsV2", "ListObjectVersions"})

_POLICY_ACTIONS = frozenset({"s3:getbucketpolicy", "s3:putbucketpolicy",
                             "s3:deletebucketpolicy"})

ANY_OBJECT = "*any object*"


def need_for(operation, query=None):
    """The :class:`Need` of an operation (with S3's version form of the
    action when the request names a versionId)."""
    need = _NEEDS[operation]
    if isinstance(need, str):
        action = ACTION_NAMES.get(operation, "s3:" + operation)
        need = Need(action, need, _ACTION_ACLS.get(action))
    if query and "versionId" in query:
        versioned = _VERSION_ACTIONS.get(need.action.lower())
        if versioned is not None:
            need = Need(versioned, need.grant, need.acl, need.acl_on_object)
    return need


@dataclass(frozen=True)
class AccessRequest:
    """One question for :func:`decide`.

    ``object_key`` is None for a bucket-level request and
    :data:`ANY_OBJECT` for "some object of the bucket"; ``context`` holds
    the condition keys (None: unknown); ``object_acl`` is the object's ACL
    when known.
    """

    key: object  # AccessKey, or None for anonymous
    need: Need
    bucket: str | None
    object_key: str | None = None
    context: dict | None = None
    object_acl: acls.Acl | None = None


@dataclass(frozen=True)
class Decision:
    allowed: bool
    reason: str
    # Which rule decided: "deny", "admin", "account", "grant", "policy",
    # "acl", "anyone" or "none".
    via: str


# A stored policy that no longer parses (it was checked when stored, so
# only a change of this code can do that) denies everything but its own
# repair, rather than fail open.
_DENY_ALL = ('{"Version": "2012-10-17", "Statement": [{"Sid": "UnreadableStoredPolicy",'
             ' "Effect": "Deny", "Principal": "*", "Action": "s3:*", "Resource": "*"}]}')


@lru_cache(maxsize=512)
def _parsed(text, bucket):
    try:
        return policies.parse(text, bucket)
    except S3Error as e:
        log.error("the stored policy of bucket {bucket} does not parse ({reason}); "
                  "it denies every request until it is replaced", bucket=bucket,
                  reason=e.message)
        return policies.parse(_DENY_ALL, bucket)


def bucket_policy(bucket):
    """The parsed policy of a Bucket record, or None."""
    text = bucket.settings.get("policy")
    return None if text is None else _parsed(text, bucket.name)


def principal_of(key):
    return None if key is None else policies.Principal(key.access_key_id, key.user_id, key.name)


def _resource(bucket, object_key):
    if object_key is None:
        return policies.ARN_PREFIX + bucket
    if object_key is ANY_OBJECT:
        return policies.ARN_PREFIX + bucket + "/"
    return policies.ARN_PREFIX + bucket + "/" + object_key


def _grant_covers(system, key, bucket, level):
    grant = system.grant(bucket, key.access_key_id)
    if grant is None:
        return False
    if grant.can_own:
        return True
    return (level == READ and grant.can_read) or (level == WRITE and grant.can_write)


def service_allowed(system, service, action, bucket_name, key_prefix, source_bucket):
    """Whether the bucket's policy lets the service principal ``service``
    (``logging.s3.amazonaws.com``) do ``action`` on every key under
    ``key_prefix``, on behalf of ``source_bucket`` (the condition keys
    ``aws:SourceArn`` and ``aws:SourceAccount`` name it and its owner).

    Only a policy can let a service in: it holds no key, no grant, and no
    ACL names it; a matching Deny wins. The answer is pessimistic (allowed
    for every key under the prefix), so a later delivery cannot be refused
    by a policy that allowed the configuration.
    """
    bucket = system.bucket(bucket_name)
    policy = bucket_policy(bucket) if bucket is not None else None
    if policy is None:
        return False
    source = system.bucket(source_bucket)
    context = {"aws:sourcearn": [policies.ARN_PREFIX + source_bucket],
               "aws:principaltype": ["AWSService"]}
    if source is not None:
        context["aws:sourceaccount"] = [source.owner]
    query = policies.Query(policies.Principal(None, None, None, service=service), action,
                           policies.ARN_PREFIX + bucket_name + "/" + key_prefix,
                           context, any_object=True)
    verdict = policies.evaluate(policy, query)
    return verdict.deny is None and verdict.allow is not None


# -- Block Public Access ---------------------------------------------------

# The bucket setting that holds the flags ({flag: bool}).
BLOCK_SETTING = "public_access_block"
BLOCK_FLAGS = ("BlockPublicAcls", "IgnorePublicAcls", "BlockPublicPolicy",
               "RestrictPublicBuckets")
# Operations whose ACL headers (x-amz-acl, x-amz-grant-*) set an ACL.
_SETS_ACL = frozenset({"CreateBucket", "PutBucketAcl", "PutObject", "CopyObject",
                       "CreateMultipartUpload", "PostObject", "PutObjectAcl"})


def blocks(settings, flag):
    """Whether a bucket's settings (or the node's defaults for new
    buckets) turn on one of :data:`BLOCK_FLAGS`."""
    return bool((settings.get(BLOCK_SETTING) or {}).get(flag))


def _blocked(reason):
    return S3Error("AccessDenied", f"Access Denied: the bucket's public access block "
                   f"({reason}) refuses this")


def refuse_public_acl(bucket, acl):
    """Raise AccessDenied if ``bucket`` blocks public ACLs and ``acl`` (an
    ACL a request sets) is public."""
    if blocks(bucket.settings, "BlockPublicAcls") and acl.is_public():
        raise _blocked("BlockPublicAcls")


def refuse_public_policy(bucket, policy):
    """Raise AccessDenied if ``bucket`` blocks public policies and
    ``policy`` (parsed, about to be stored) is public."""
    if blocks(bucket.settings, "BlockPublicPolicy") and policy.is_public():
        raise _blocked("BlockPublicPolicy")


def _without_public_grants(acl):
    return acls.Acl(acl.owner, tuple(
        g for g in acl.grants
        if not (g.kind == acls.GROUP and g.value in (acls.ALL_USERS,
                                                      acls.AUTHENTICATED_USERS))))


def _policy_allow_counts(system, key, bucket, policy):
    """Whether a policy's Allow may open the bucket to this requester:
    under RestrictPublicBuckets a public policy serves only the bucket's
    own keys (AWS: "only AWS service principals and authorized users
    within the bucket owner's account")."""
    if not (blocks(bucket.settings, "RestrictPublicBuckets") and policy.is_public()):
        return True
    return key is not None and system.grant(bucket.name, key.access_key_id) is not None


def decide(system, request, optimistic=False):
    """Whether ``request`` (an :class:`AccessRequest`) is allowed, and why.

    Where the request leaves something unknown (``ANY_OBJECT``, no
    context, no object ACL) the answer is pessimistic (what is allowed
    whatever the details) unless ``optimistic`` (what may be allowed).
    """
    need, key = request.need, request.key
    if need.grant == ANYONE:
        return Decision(True, "needs no key", "anyone")
    bucket = system.bucket(request.bucket) if request.bucket is not None else None
    verdict = None
    if bucket is not None:
        policy = bucket_policy(bucket)
        if policy is not None:
            query = policies.Query(principal_of(key), need.action,
                                   _resource(bucket.name, request.object_key),
                                   request.context, request.object_key is ANY_OBJECT)
            verdict = policies.evaluate(policy, query, optimistic)
            if verdict.deny is not None and not (
                    need.action.lower() in _POLICY_ACTIONS and key is not None
                    and (key.is_admin or _grant_covers(system, key, bucket.name, OWNER))):
                return Decision(False, f"denied by bucket policy statement {verdict.deny.sid}",
                                "deny")
    if key is not None and key.is_admin:
        return Decision(True, "admin key", "admin")
    if need.grant == ACCOUNT:
        if key is not None:
            return Decision(True, "any key may", "account")
        return Decision(False, "needs a key", "none")
    if key is not None and bucket is not None and _grant_covers(system, key, bucket.name,
                                                                need.grant):
        return Decision(True, f"{need.grant} grant", "grant")
    if verdict is not None and verdict.allow is not None \
            and _policy_allow_counts(system, key, bucket, policy):
        return Decision(True, f"bucket policy statement {verdict.allow.sid}", "policy")
    if bucket is not None and need.acl is not None and acls.acls_enabled(bucket):
        acl = request.object_acl if need.acl_on_object else acls.bucket_acl(bucket)
        if acl is not None and blocks(bucket.settings, "IgnorePublicAcls"):
            acl = _without_public_grants(acl)
        if acl is not None and acl.allows(key, need.acl, ignore_user=bucket.owner):
            return Decision(True, f"{'object' if need.acl_on_object else 'bucket'} ACL", "acl")
    return Decision(False, "no grant, bucket policy or ACL allows it", "none")


# -- the request pipeline --------------------------------------------------

def _iso(seconds):
    return datetime.fromtimestamp(int(seconds), timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _kms_key_as_arn(api, context):
    """s3:x-amz-server-side-encryption-aws-kms-key-id is the key's ARN, as
    S3's documentation has policies name it, whether the request named the
    key by id, ARN or alias (a key this node does not know stays as sent)."""
    name = "s3:x-amz-server-side-encryption-aws-kms-key-id"
    if name in context and api.objects.kms is not None:
        kms_key = api.objects.kms.find(context[name][0])
        if kms_key is not None:
            context[name] = [arn(kms_key)]


def request_context(api, call):
    """The condition keys of a request (lower-cased names -> [values])."""
    headers, key, request = call.headers, call.access_key, call.request
    now = api.clock.seconds()
    context = {
        "aws:currenttime": [_iso(now)],
        "aws:epochtime": [str(int(now))],
        # S3Call.secure also believes a --trusted-proxy's X-Forwarded-Proto.
        "aws:securetransport": ["true" if getattr(call, "secure", False)
                                or _is_secure(request) else "false"],
        "aws:principaltype": ["Anonymous" if key is None else "User"],
    }
    address = _client_address(request)
    if address:
        context["aws:sourceip"] = [address]
    if key is not None:
        context["aws:username"] = [key.name]
        context["aws:userid"] = [key.user_id]
    for header, name in (("user-agent", "aws:useragent"), ("referer", "aws:referer")):
        if header in headers:
            context[name] = [headers[header]]
    for header in _HEADER_KEYS:
        if header in headers:
            context["s3:" + header] = [headers[header].strip()]
    for header, name in _RENAMED_HEADER_KEYS.items():
        if header in headers:
            context[name] = [headers[header].strip()]
    _kms_key_as_arn(api, context)
    if call.operation in _LISTINGS:
        for name in _LISTING_KEYS:
            if name in call.query:
                context["s3:" + name] = [call.query[name]]
    if "versionId" in call.query:
        context["s3:versionid"] = [call.query["versionId"]]
    tagging = headers.get("x-amz-tagging")
    if tagging is not None:
        tags = parse_qsl(tagging, keep_blank_values=True)
        for name, value in tags:
            context["s3:requestobjecttag/" + name] = [value]
        context["s3:requestobjecttagkeys"] = [name for name, _ in tags]
    credentials = call.credentials
    if credentials is not None:
        context["s3:signatureversion"] = [
            "AWS4-HMAC-SHA256" if credentials.signature_version == 4 else "AWS"]
        context["s3:authtype"] = ["REST-QUERY-STRING" if credentials.presigned
                                  else "REST-HEADER"]
    return context


def _is_secure(request):
    try:
        return bool(request.isSecure())
    except AttributeError:
        return False


def _client_address(request):
    try:
        return getattr(request.getClientAddress(), "host", None)
    except AttributeError:
        return None


def object_tags(version):
    """The tags stored with an object version (name -> value)."""
    return version.meta.get("tags") or {}


async def _head(api, bucket, key):
    try:
        return await api.objects.head_object(bucket, key)
    except ObjectError:
        return None


def _needs_object(bucket, need):
    if need.acl_on_object and acls.acls_enabled(bucket):
        return True
    policy = bucket_policy(bucket)
    return policy is not None and policy.mentions_existing_object_tags


async def _authorize_object(api, call, need, bucket_name, key, version=None, fetched=False):
    """The decision about one object-level request (shared by the
    pipeline, copy sources and each key of DeleteObjects)."""
    system = api.system
    bucket = system.bucket(bucket_name)
    context = call.access_context
    object_acl = None
    if bucket is not None and (fetched or _needs_object(bucket, need)):
        if not fetched:
            version = await _head(api, bucket_name, key)
            fetched = True
        if version is not None:
            tags = object_tags(version)
            if tags:
                context = dict(context)
                for name, value in tags.items():
                    context["s3:existingobjecttag/" + name] = [value]
            object_acl = acls.object_acl(bucket, version)
    decision = decide(system, AccessRequest(call.access_key, need, bucket_name, key,
                                            context, object_acl))
    return decision, version, fetched


async def authorize(api, call):
    """Raise AccessDenied unless the request in ``call`` may be carried
    out; the pipeline calls it once per request, before the handler."""
    need = need_for(call.operation, call.query)
    call.access_context = None
    if need.grant == ANYONE:
        return
    key, system = call.access_key, api.system
    bucket = system.bucket(call.bucket) if call.bucket is not None else None
    if call.operation in _SETS_ACL:
        _refuse_public_acl_headers(api, call, bucket)
    if key is not None and key.is_admin and (bucket is None or "policy" not in bucket.settings):
        return
    call.access_context = request_context(api, call)
    object_level = policies.ACTIONS.get(need.action.lower()) == policies.OBJECT
    if call.bucket is None or not object_level:
        decision = decide(system, AccessRequest(key, need, call.bucket, None,
                                                call.access_context))
    elif call.key is None:
        # DeleteObjects: may it delete anything at all? Each key is asked
        # again by the handler.
        decision = decide(system, AccessRequest(key, need, call.bucket, ANY_OBJECT,
                                                call.access_context), optimistic=True)
    else:
        decision, version, fetched = await _authorize_object(api, call, need, call.bucket,
                                                            call.key)
        if decision.allowed and call.operation == "DeleteObject" \
                and compares_etag(call.headers.get("if-match")):
            decision, _, _ = await _authorize_object(
                api, call, need_for("GetObject", call.query), call.bucket, call.key,
                version, fetched)
        if decision.allowed and decision.via in ("policy", "acl") \
                and call.operation in _HIDES_MISSING_KEYS:
            if not fetched:
                version = await _head(api, call.bucket, call.key)
            if version is None and not _may_list(api, call, call.bucket):
                raise S3Error("AccessDenied")
    call.decision = decision
    if not decision.allowed:
        raise S3Error("AccessDenied")


def _refuse_public_acl_headers(api, call, bucket):
    """BlockPublicAcls for an ACL set by headers, whoever asks (an ACL
    document in a body is checked where it is read). A new bucket has the
    node's defaults for new buckets."""
    if call.operation == "CreateBucket":
        settings = api.objects.default_bucket_settings
    else:
        settings = bucket.settings if bucket is not None else {}
    if not blocks(settings, "BlockPublicAcls") or not acls.has_acl_headers(call.headers):
        return
    # Grantee ids are checked by the handler; only public groups matter here.
    requested = acls.from_headers(call.headers, "", "", call.operation == "CreateBucket",
                                  lambda user_id: True)
    if requested is not None and requested.is_public():
        raise _blocked("BlockPublicAcls")


def _may_list(api, call, bucket):
    return decide(api.system, AccessRequest(call.access_key, need_for("ListObjects"), bucket,
                                            None, call.access_context)).allowed


async def authorize_copy_source(api, call, bucket, key, version, version_id=None):
    """Raise AccessDenied unless the caller may read the copy source
    ``bucket``/``key`` (``version``: its head, or None if there is none)."""
    caller = call.access_key
    if caller is not None and caller.is_admin and (
            api.system.bucket(bucket) is None
            or "policy" not in api.system.bucket(bucket).settings):
        return
    if call.access_context is None:
        call.access_context = request_context(api, call)
    need = need_for("GetObject", {"versionId": version_id} if version_id else None)
    decision, _, _ = await _authorize_object(api, call, need, bucket, key, version, True)
    if not decision.allowed:
        raise S3Error("AccessDenied")
    if version is None and decision.via in ("policy", "acl") \
            and not _may_list(api, call, bucket):
        raise S3Error("AccessDenied")


def allows(api, call, operation, bucket=None, key=None):
    """The Decision on ``operation`` for this call's requester and
    condition context, on ``bucket``/``key`` (the call's, unless named).

    Synchronous, for permissions a request needs beside its own (such as
    ``s3:BypassGovernanceRetention``): it looks at grants, the bucket
    policy and the bucket ACL, but fetches no object, so object ACLs and
    ``s3:ExistingObjectTag`` conditions do not count here."""
    caller = call.access_key
    if call.access_context is None and not (caller is not None and caller.is_admin):
        call.access_context = request_context(api, call)
    bucket = call.bucket if bucket is None else bucket
    key = call.key if key is None else key
    need = need_for(operation, call.query)
    if policies.ACTIONS.get(need.action.lower()) != policies.OBJECT:
        key = None
    context = call.access_context if call.access_context is not None else {}
    return decide(api.system, AccessRequest(caller, need, bucket, key, context))


def compares_etag(if_match):
    """Whether a delete's If-Match (or a DeleteObjects entry's ETag) names
    an ETag: S3 then also asks for s3:GetObject, since the answer tells
    the caller what the object's ETag is."""
    return if_match is not None and if_match.strip() != "*"


async def may_delete(api, call, key, version_id=None, etag=None):
    """Whether DeleteObjects may delete ``key`` (``version_id`` of it) of
    the call's bucket, given the entry's ``ETag`` condition."""
    caller = call.access_key
    if call.access_context is None and caller is not None and caller.is_admin:
        return True
    if call.access_context is None:
        call.access_context = request_context(api, call)
    query = {"versionId": version_id} if version_id else None
    decision, version, fetched = await _authorize_object(
        api, call, need_for("DeleteObject", query), call.bucket, key)
    if decision.allowed and compares_etag(etag):
        decision, _, _ = await _authorize_object(api, call, need_for("GetObject", query),
                                                 call.bucket, key, version, fetched)
    return decision.allowed


def owner_id(call):
    """The canonical user id that owns what this request writes."""
    return ANONYMOUS_USER_ID if call.access_key is None else call.access_key.user_id


def can_see_bucket(system, key, bucket):
    """Whether ListBuckets shows ``bucket`` to ``key``: the admin key sees
    every bucket, other keys those they hold a grant on."""
    if key is None:
        return False
    if key.is_admin:
        return True
    grant = system.grant(bucket, key.access_key_id)
    return grant is not None and (grant.can_read or grant.can_write or grant.can_own)


# -- what a key may do (z4 key info) ------------------------------------------

def bucket_is_public(bucket):
    """Whether a Bucket record's policy (by S3's PolicyStatus rule) or its
    ACL (when ACLs count) opens it to everyone, unless its public access
    block (RestrictPublicBuckets, IgnorePublicAcls) takes that away.
    Object ACLs are not looked at."""
    policy = bucket_policy(bucket)
    if policy is not None and policy.is_public() \
            and not blocks(bucket.settings, "RestrictPublicBuckets"):
        return True
    return acls.acls_enabled(bucket) and acls.bucket_acl(bucket).is_public() \
        and not blocks(bucket.settings, "IgnorePublicAcls")


def summarize(system, key):
    """What ``key`` may do on each bucket, by :func:`decide`: the actions
    it may take whatever the request, and those some requests may take
    (policy conditions, some keys of the bucket). Object ACLs are not
    looked at (they are per object)."""
    needs = {}
    for operation in _NEEDS:
        need = need_for(operation)
        if need.grant not in (ACCOUNT, ANYONE):
            needs.setdefault(need.action, need)
    out = []
    for bucket in system.buckets():
        always, sometimes, reasons = [], [], set()
        for action, need in sorted(needs.items()):
            object_level = policies.ACTIONS.get(action.lower()) == policies.OBJECT
            request = AccessRequest(key, need, bucket.name,
                                    ANY_OBJECT if object_level else None, None)
            worst = decide(system, request)
            if worst.allowed:
                always.append(action)
                reasons.add(worst.reason)
                continue
            best = decide(system, request, optimistic=True)
            if best.allowed:
                sometimes.append(action)
                reasons.add(best.reason)
        if always or sometimes:
            out.append({"bucket": bucket.name, "always": always, "sometimes": sometimes,
                        "via": sorted(reasons)})
    return out
