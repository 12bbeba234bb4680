"""The S3 bucket policy language: parse and validate a policy document
(``MalformedPolicy`` with the reason, as S3 answers) and evaluate it for
one request.

This module owns the language and nothing else. Who the principal is,
which action and resource a request is, and the condition context (client
address, time, headers) are handed in by ``z4node.s3.authorization``,
which combines the answer with grants and ACLs. Nothing here reads a clock,
a table or a socket: the current time is a context value like any other.

What is understood:

- ``Version`` ``2012-10-17`` (policy variables such as ``${aws:username}``
  are substituted in Resource and in string condition values) or
  ``2008-10-17`` / none (no substitution), ``Id``, ``Statement`` (one or a
  list), ``Sid``, ``Effect``.
- ``Principal`` / ``NotPrincipal``: ``"*"``, ``{"AWS": "*"}``, and
  z4node keys named by ``{"AWS": [...]}`` entries: an access key id
  (``Z4...``), a canonical user id (64 hex digits) or the ARN
  ``arn:aws:iam::<any account>:user/<key name>``; also
  ``{"CanonicalUser": "<user id>"}``; and service principals,
  ``{"Service": "logging.s3.amazonaws.com"}`` (the one service that acts
  here: server access log delivery, see ``z4node.objects.access_logging``).
- ``Action`` / ``NotAction``: ``s3:`` actions, ``*`` and ``?`` wildcards,
  case-insensitive, checked against S3's action names.
- ``Resource`` / ``NotResource``: ``arn:aws:s3:::bucket`` and
  ``arn:aws:s3:::bucket/key`` with wildcards (every resource must be able
  to name this bucket or its objects), or ``*``.
- ``Condition``: the operators of :data:`OPERATORS`, each with an
  ``IfExists`` form (except ``Null``) and the ``ForAnyValue:`` /
  ``ForAllValues:`` set qualifiers.

Matching is done without backtracking regular expressions (a glob is cut
at its ``*`` into fixed-length pieces found left to right), so a hostile
pattern costs O(pattern x resource), never exponential time.
"""

import base64
import binascii
import ipaddress
import json
import math
import re
from dataclasses import dataclass, field
from datetime import datetime, timezone

from z4node.s3.errors import S3Error

# S3's limit on a bucket policy document, in bytes.
MAX_POLICY_BYTES = 20 * 1024
VERSIONS = ("2012-10-17", "2008-10-17")
ARN_PREFIX = "arn:aws:s3:::"

# What an action applies to: an object ARN, a bucket ARN or neither (the
# account). A bucket policy statement must name at least one action that
# applies to one of its resources.
OBJECT, BUCKET, ACCOUNT = "object", "bucket", "account"

_OBJECT_ACTIONS = """
AbortMultipartUpload BypassGovernanceRetention DeleteObject DeleteObjectTagging
DeleteObjectVersion DeleteObjectVersionTagging GetObject GetObjectAcl
GetObjectAttributes GetObjectLegalHold GetObjectRetention GetObjectTagging
GetObjectTorrent GetObjectVersion GetObjectVersionAcl GetObjectVersionAttributes
GetObjectVersionForReplication GetObjectVersionTagging GetObjectVersionTorrent
InitiateReplication ListMultipartUploadParts ObjectOwnerOverrideToBucketOwner
PutObject PutObjectAcl PutObjectLegalHold PutObjectRetention PutObjectTagging
PutObjectVersionAcl PutObjectVersionTagging ReplicateDelete ReplicateObject
ReplicateTags RestoreObject
"""
_BUCKET_ACTIONS = """
CreateBucket DeleteBucket DeleteBucketOwnershipControls DeleteBucketPolicy
DeleteBucketWebsite GetAccelerateConfiguration GetAnalyticsConfiguration
GetBucketAcl GetBucketCORS GetBucketLocation GetBucketLogging
GetBucketNotification GetBucketObjectLockConfiguration GetBucketOwnershipControls
GetBucketPolicy GetBucketPolicyStatus GetBucketPublicAccessBlock
GetBucketRequestPayment GetBucketTagging GetBucketVersioning GetBucketWebsite
GetEncryptionConfiguration GetIntelligentTieringConfiguration
GetInventoryConfiguration GetLifecycleConfiguration GetMetricsConfiguration
GetReplicationConfiguration ListBucket ListBucketMultipartUploads
ListBucketVersions PutAccelerateConfiguration PutAnalyticsConfiguration
PutBucketAcl PutBucketCORS PutBucketLogging PutBucketNotification
PutBucketObjectLockConfiguration PutBucketOwnershipControls PutBucketPolicy
PutBucketPublicAccessBlock PutBucketRequestPayment PutBucketTagging
PutBucketVersioning PutBucketWebsite PutEncryptionConfiguration
PutIntelligentTieringConfiguration PutInventoryConfiguration
PutLifecycleConfiguration PutMetricsConfiguration PutReplicationConfiguration
"""
_ACCOUNT_ACTIONS = """
ListAllMyBuckets GetAccountPublicAccessBlock PutAccountPublicAccessBlock
ListAccessPoints ListJobs CreateJob
"""
# Lower-cased "s3:name" -> what it applies to.
ACTIONS = {}
for _kind, _names in ((OBJECT, _OBJECT_ACTIONS), (BUCKET, _BUCKET_ACTIONS),
                      (ACCOUNT, _ACCOUNT_ACTIONS)):
    for _name in _names.split():
        ACTIONS["s3:" + _name.lower()] = _kind

# Condition keys S3 documents, lower-cased; a policy naming any other s3:
# key is refused. (Every aws: key is accepted: the global keys z4node does
# not provide are simply absent from the context.)
_S3_KEYS = frozenset(k.lower() for k in """
s3:prefix s3:delimiter s3:max-keys s3:x-amz-acl s3:x-amz-grant-read
s3:x-amz-grant-write s3:x-amz-grant-read-acp s3:x-amz-grant-write-acp
s3:x-amz-grant-full-control s3:x-amz-server-side-encryption
s3:x-amz-server-side-encryption-aws-kms-key-id
s3:x-amz-server-side-encryption-customer-algorithm s3:x-amz-copy-source
s3:x-amz-metadata-directive s3:x-amz-storage-class s3:x-amz-content-sha256
s3:x-amz-object-ownership s3:x-amz-website-redirect-location s3:VersionId
s3:LocationConstraint s3:RequestObjectTagKeys s3:ResourceAccount
s3:signatureversion s3:signatureAge s3:authType s3:TlsVersion
s3:object-lock-mode s3:object-lock-retain-until-date
s3:object-lock-remaining-retention-days s3:object-lock-legal-hold
s3:DataAccessPointArn s3:DataAccessPointAccount s3:AccessPointNetworkOrigin
s3:if-match s3:if-none-match s3:x-amz-checksum-algorithm
s3:ObjectCreationOperation s3:BucketObjectLockEnabled
""".split())
_S3_KEY_PREFIXES = ("s3:existingobjecttag/", "s3:requestobjecttag/", "s3:buckettag/")

_STRING, _NUMERIC, _DATE, _BOOL, _BINARY, _IP, _ARN = (
    "string", "numeric", "date", "bool", "binary", "ip", "arn")
# operator -> (value type, negated, comparison of one request value with
# one policy value)
OPERATORS = {
    "StringEquals": (_STRING, False, "eq"),
    "StringNotEquals": (_STRING, True, "eq"),
    "StringEqualsIgnoreCase": (_STRING, False, "ieq"),
    "StringNotEqualsIgnoreCase": (_STRING, True, "ieq"),
    "StringLike": (_STRING, False, "like"),
    "StringNotLike": (_STRING, True, "like"),
    "NumericEquals": (_NUMERIC, False, "eq"),
    "NumericNotEquals": (_NUMERIC, True, "eq"),
    "NumericLessThan": (_NUMERIC, False, "lt"),
    "NumericLessThanEquals": (_NUMERIC, False, "le"),
    "NumericGreaterThan": (_NUMERIC, False, "gt"),
    "NumericGreaterThanEquals": (_NUMERIC, False, "ge"),
    "DateEquals": (_DATE, False, "eq"),
    "DateNotEquals": (_DATE, True, "eq"),
    "DateLessThan": (_DATE, False, "lt"),
    "DateLessThanEquals": (_DATE, False, "le"),
    "DateGreaterThan": (_DATE, False, "gt"),
    "DateGreaterThanEquals": (_DATE, False, "ge"),
    "Bool": (_BOOL, False, "eq"),
    "BinaryEquals": (_BINARY, False, "eq"),
    "IpAddress": (_IP, False, "in"),
    "NotIpAddress": (_IP, True, "in"),
    "ArnEquals": (_ARN, False, "like"),
    "ArnLike": (_ARN, False, "like"),
    "ArnNotEquals": (_ARN, True, "like"),
    "ArnNotLike": (_ARN, True, "like"),
    "Null": (None, False, "null"),
}

# Condition keys that, pinned to fixed values, keep an Allow for "*" from
# making a bucket public (AWS's rules for PolicyStatus.IsPublic).
_RESTRICTING_KEYS = frozenset(k.lower() for k in (
    "aws:SourceIp", "aws:SourceArn", "aws:SourceVpc", "aws:SourceVpce",
    "aws:SourceAccount", "aws:SourceOwner", "aws:PrincipalOrgID",
    "aws:PrincipalAccount", "aws:PrincipalArn", "aws:userid", "aws:username",
    "s3:DataAccessPointArn", "s3:DataAccessPointAccount"))

_USER_ARN = re.compile(r"^arn:aws:iam::[^:]*:user/(?:[^:]*/)?([^/:]+)$")
_USER_ID = re.compile(r"^[0-9a-f]{64}$")
# Access key ids: generated ones are Z4 + 18 base32 characters; an admin
# key taken from Z4_ACCESS_KEY may be any printable word.
_ACCESS_KEY_ID = re.compile(r"^[A-Za-z0-9_.@+=-]{3,128}$")
# A service principal's DNS name (logging.s3.amazonaws.com).
_SERVICE_NAME = re.compile(r"^[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)+$")
_VARIABLE = re.compile(r"\$\{([^}]*)\}")
_DEFAULT = re.compile(r"^\s*([^,\s]+)\s*,\s*'([^']*)'\s*$")


def malformed(reason):
    return S3Error("MalformedPolicy", reason)


# -- globs ---------------------------------------------------------------

_STAR = object()
_ONE = object()


class Glob:
    """A ``*`` / ``?`` pattern, matched in linear passes.

    ``items`` is a list of characters, :data:`_STAR` and :data:`_ONE`; a
    ``*`` that came from a policy variable (``${*}``) is a plain character.
    """

    def __init__(self, items, ignore_case=False):
        self.items = items
        self.ignore_case = ignore_case
        flags = re.DOTALL | (re.IGNORECASE if ignore_case else 0)
        self._pieces = []
        piece = []
        for item in items + [_STAR]:
            if item is _STAR:
                self._pieces.append(re.compile("".join(
                    "." if c is _ONE else re.escape(c) for c in piece), flags))
                piece = []
            else:
                piece.append(item)
        self._sizes = []
        size = 0
        for item in items + [_STAR]:
            if item is _STAR:
                self._sizes.append(size)
                size = 0
            else:
                size += 1
        self.ends_with_star = bool(items) and items[-1] is _STAR

    @classmethod
    def of(cls, text, ignore_case=False):
        return cls([_STAR if c == "*" else _ONE if c == "?" else c for c in text],
                   ignore_case)

    def match(self, text):
        """Whether the whole of ``text`` matches."""
        pieces, sizes = self._pieces, self._sizes
        if len(pieces) == 1:
            return len(text) == sizes[0] and pieces[0].fullmatch(text) is not None
        if len(text) < sum(sizes):
            return False
        if pieces[0].match(text, 0) is None:
            return False
        position = sizes[0]
        end = len(text) - sizes[-1]
        if end < position or pieces[-1].fullmatch(text, end) is None:
            return False
        for piece, size in zip(pieces[1:-1], sizes[1:-1]):
            found = piece.search(text, position, end)
            if found is None:
                return False
            position = found.end()
        return True

    def covers_all_after(self, prefix):
        """Whether every string starting with ``prefix`` matches."""
        return self.ends_with_star and self.match(prefix)

    def may_match_after(self, prefix):
        """Whether some string starting with ``prefix`` matches: the
        pattern can consume ``prefix`` and stop anywhere."""
        items = self.items
        fold = (lambda c: c.lower()) if self.ignore_case else (lambda c: c)

        def closure(states):
            out = set()
            for state in states:
                while state < len(items) and items[state] is _STAR:
                    out.add(state)
                    state += 1
                out.add(state)
            return out

        states = closure({0})
        for char in prefix:
            advanced = set()
            for state in states:
                if state == len(items):
                    continue
                item = items[state]
                if item is _STAR:
                    advanced.add(state)
                elif item is _ONE or fold(item) == fold(char):
                    advanced.add(state + 1)
            states = closure(advanced)
            if not states:
                return False
        return True


class Pattern:
    """A Resource, Action or string condition value: a glob, possibly with
    policy variables resolved per request."""

    def __init__(self, text, variables, ignore_case=False):
        self.text = text
        self.ignore_case = ignore_case
        self.has_variables = variables and "${" in text
        self._glob = None if self.has_variables else Glob.of(text, ignore_case)

    def glob(self, context):
        """The Glob for this request, or None when a variable it names is
        absent (such a pattern matches nothing). ``context`` None means
        unknown: None is returned for patterns with variables."""
        if self._glob is not None:
            return self._glob
        if context is None:
            return None
        items = []
        position = 0
        for found in _VARIABLE.finditer(self.text):
            items.extend(_STAR if c == "*" else _ONE if c == "?" else c
                         for c in self.text[position:found.start()])
            position = found.end()
            name = found.group(1).strip()
            if name in ("*", "?", "$"):
                items.append(name)
                continue
            default = None
            with_default = _DEFAULT.match(name)
            if with_default:
                name, default = with_default.group(1), with_default.group(2)
            values = context.get(_key_name(name))
            if values:
                items.extend(values[0])
            elif default is not None:
                items.extend(default)
            else:
                return None
        items.extend(_STAR if c == "*" else _ONE if c == "?" else c
                     for c in self.text[position:])
        return Glob(items, self.ignore_case)

    def literal(self, context):
        """The pattern as a plain string (variables substituted), for
        equality operators; None when a variable is absent."""
        if not self.has_variables:
            return self.text
        glob = self.glob(context)
        if glob is None:
            return None
        return "".join("*" if i is _STAR else "?" if i is _ONE else i for i in glob.items)


def _key_name(name):
    """Condition key names are case-insensitive; the tag key after the
    slash of ``s3:ExistingObjectTag/<key>`` is not."""
    head, slash, tail = name.partition("/")
    return head.lower() + slash + tail


# -- the parsed document -------------------------------------------------

@dataclass(frozen=True)
class PrincipalSpec:
    """One Principal entry: ``kind`` is ``any``, ``access_key``,
    ``user_id``, ``name`` or ``service``."""

    kind: str
    value: str = ""

    def matches(self, principal):
        if self.kind == "any":
            return True
        if principal is None:
            return False
        if self.kind == "service" or principal.service is not None:
            # A service is named only as a service; "*" covers it too.
            return self.kind == "service" and principal.service == self.value
        if self.kind == "access_key":
            return principal.access_key_id == self.value
        if self.kind == "user_id":
            return principal.user_id == self.value
        return principal.name == self.value


@dataclass
class Condition:
    operator: str  # e.g. "StringLike", without qualifier or IfExists
    qualifier: str | None  # None, "ForAnyValue", "ForAllValues"
    if_exists: bool
    key: str  # normalized by _key_name
    values: list  # Pattern for string/ARN types, parsed values otherwise


@dataclass
class Statement:
    sid: str
    effect: str
    principals: list | None = None
    not_principals: list | None = None
    actions: list | None = None
    not_actions: list | None = None
    resources: list | None = None
    not_resources: list | None = None
    conditions: list = field(default_factory=list)


@dataclass
class Policy:
    text: str
    version: str
    statements: list

    @property
    def mentions_existing_object_tags(self):
        return any(c.key.startswith("s3:existingobjecttag/")
                   for s in self.statements for c in s.conditions)

    def is_public(self):
        """PolicyStatus.IsPublic, by AWS's rule: an Allow for everyone
        that no fixed-value condition on a restricting key narrows."""
        for statement in self.statements:
            if statement.effect != "Allow":
                continue
            if statement.not_principals is not None:
                everyone = True
            else:
                everyone = any(p.kind == "any" for p in statement.principals)
            if not everyone:
                continue
            if not any(_restricts(c) for c in statement.conditions):
                return True
        return False


def _restricts(condition):
    if condition.key not in _RESTRICTING_KEYS or condition.qualifier is not None:
        return False
    base = OPERATORS[condition.operator]
    if base[1] or condition.operator == "Null":
        return False
    for value in condition.values:
        if isinstance(value, Pattern):
            if "*" in value.text or "?" in value.text or value.has_variables:
                return False
        elif isinstance(value, (ipaddress.IPv4Network, ipaddress.IPv6Network)):
            if value.prefixlen == 0:
                return False
    return True


# -- parsing -------------------------------------------------------------

_TOP_FIELDS = {"Version", "Id", "Statement"}
_STATEMENT_FIELDS = {"Sid", "Effect", "Principal", "NotPrincipal", "Action",
                     "NotAction", "Resource", "NotResource", "Condition"}


def parse(text, bucket, principal_exists=None):
    """The :class:`Policy` in ``text`` (str or bytes) for ``bucket``.

    Raises ``S3Error("MalformedPolicy", reason)``. ``principal_exists(spec)``
    is asked about every key a Principal names when a policy is stored (S3
    refuses principals that do not exist); stored policies are parsed
    without it, so a key deleted since still leaves a readable policy.
    """
    if isinstance(text, bytes):
        if len(text) > MAX_POLICY_BYTES:
            raise malformed("Policy exceeds the maximum allowed document size.")
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError:
            raise malformed("This policy contains invalid Json") from None
    elif len(text.encode("utf-8")) > MAX_POLICY_BYTES:
        raise malformed("Policy exceeds the maximum allowed document size.")
    if not text.lstrip().startswith("{"):
        raise malformed("Policies must be valid JSON and the first byte must be '{'")
    try:
        document = json.loads(text, parse_constant=_refuse_constant)
    except (ValueError, RecursionError):
        raise malformed("This policy contains invalid Json") from None
    if not isinstance(document, dict):
        raise malformed("This policy contains invalid Json")
    for name in document:
        if name not in _TOP_FIELDS:
            raise malformed(f"Unknown field {name}")
    version = document.get("Version", "2008-10-17")
    if version not in VERSIONS:
        raise malformed("The policy must contain a valid version string")
    if "Id" in document and not isinstance(document["Id"], str):
        raise malformed("Id must be a string")
    if "Statement" not in document:
        raise malformed("Missing required field Statement")
    raw = document["Statement"]
    if isinstance(raw, dict):
        raw = [raw]
    if not isinstance(raw, list) or not raw:
        raise malformed("Statement must be a non-empty list of statements")
    statements = []
    sids = set()
    variables = version == "2012-10-17"
    for number, item in enumerate(raw, 1):
        statement = _parse_statement(item, number, bucket, variables, principal_exists)
        if statement.sid in sids:
            raise malformed("Statement IDs (SID) in a single policy must be unique.")
        sids.add(statement.sid)
        statements.append(statement)
    return Policy(text, version, statements)


def _refuse_constant(name):
    raise ValueError(name)


def _strings(value, what):
    """A policy element that may be one string or a list of strings."""
    if isinstance(value, str):
        return [value]
    if isinstance(value, list) and value and all(isinstance(v, str) for v in value):
        return value
    raise malformed(f"{what} must be a string or a non-empty list of strings")


def _parse_statement(item, number, bucket, variables, principal_exists):
    if not isinstance(item, dict):
        raise malformed("Each statement must be a JSON object")
    for name in item:
        if name not in _STATEMENT_FIELDS:
            raise malformed(f"Unknown field {name}")
    sid = item.get("Sid", f"#{number}")
    if not isinstance(sid, str):
        raise malformed("Sid must be a string")
    if "Effect" not in item:
        raise malformed("Missing required field Effect")
    effect = item["Effect"]
    if effect not in ("Allow", "Deny"):
        raise malformed(f"Invalid effect: {effect}")
    statement = Statement(sid or f"#{number}", effect)

    has_principal, has_not = "Principal" in item, "NotPrincipal" in item
    if has_principal == has_not:
        raise malformed("Missing required field Principal" if not has_principal
                        else "Statement may have only one of Principal and NotPrincipal")
    if has_principal:
        statement.principals = _parse_principal(item["Principal"], principal_exists)
    else:
        statement.not_principals = _parse_principal(item["NotPrincipal"], principal_exists)

    has_action, has_not = "Action" in item, "NotAction" in item
    if has_action == has_not:
        raise malformed("Missing required field Action" if not has_action
                        else "Statement may have only one of Action and NotAction")
    patterns = [_parse_action(a) for a in _strings(item.get("Action", item.get("NotAction")),
                                                   "Action")]
    if has_action:
        statement.actions = patterns
    else:
        statement.not_actions = patterns

    has_resource, has_not = "Resource" in item, "NotResource" in item
    if has_resource == has_not:
        raise malformed("Missing required field Resource" if not has_resource
                        else "Statement may have only one of Resource and NotResource")
    resources = [_parse_resource(r, bucket, variables)
                 for r in _strings(item.get("Resource", item.get("NotResource")), "Resource")]
    if has_resource:
        statement.resources = resources
        if has_action and not _applies_somewhere(patterns, resources, bucket):
            raise malformed("Action does not apply to any resource(s) in statement")
    else:
        statement.not_resources = resources

    if "Condition" in item:
        statement.conditions = _parse_conditions(item["Condition"], variables)
    return statement


def _parse_principal(value, principal_exists):
    if value == "*":
        return [PrincipalSpec("any")]
    if not isinstance(value, dict) or not value:
        raise malformed("Invalid principal in policy")
    specs = []
    for kind, entries in value.items():
        if kind not in ("AWS", "CanonicalUser", "Service"):
            raise malformed("Invalid principal in policy")
        for entry in _strings(entries, "Principal"):
            spec = _principal_spec(kind, entry.strip())
            if spec.kind not in ("any", "service") and principal_exists is not None \
                    and not principal_exists(spec):
                raise malformed("Invalid principal in policy")
            specs.append(spec)
    return specs


def _principal_spec(kind, entry):
    if kind == "Service":
        # AWS names services by DNS name (``logging.s3.amazonaws.com``);
        # no wildcards.
        if not _SERVICE_NAME.match(entry):
            raise malformed("Invalid principal in policy")
        return PrincipalSpec("service", entry.lower())
    if kind == "CanonicalUser":
        if not _USER_ID.match(entry):
            raise malformed("Invalid principal in policy")
        return PrincipalSpec("user_id", entry)
    if entry == "*":
        return PrincipalSpec("any")
    found = _USER_ARN.match(entry)
    if found:
        return PrincipalSpec("name", found.group(1))
    if _USER_ID.match(entry):
        return PrincipalSpec("user_id", entry)
    if entry and not entry.isdigit() and not entry.startswith("arn:") \
            and _ACCESS_KEY_ID.match(entry):
        return PrincipalSpec("access_key", entry)
    raise malformed("Invalid principal in policy")


def _parse_action(text):
    lowered = text.lower()
    if lowered == "*":
        return Pattern("*", False, ignore_case=True)
    if not lowered.startswith("s3:") or len(lowered) == 3:
        raise malformed("Policy has invalid action")
    pattern = Pattern(lowered, False, ignore_case=True)
    glob = pattern.glob(None)
    if not any(glob.match(name) for name in ACTIONS):
        raise malformed("Policy has invalid action")
    return pattern


def _parse_resource(text, bucket, variables):
    if text == "*":
        return Pattern("*", False)
    if not text.startswith(ARN_PREFIX) or len(text) == len(ARN_PREFIX):
        raise malformed("Policy has invalid resource")
    pattern = Pattern(text, variables)
    if not pattern.has_variables:
        glob = pattern.glob(None)
        if not (glob.match(ARN_PREFIX + bucket)
                or glob.may_match_after(ARN_PREFIX + bucket + "/")):
            raise malformed("Policy has invalid resource")
    else:
        name = text[len(ARN_PREFIX):].split("/", 1)[0]
        if "${" not in name and not Glob.of(name).match(bucket):
            raise malformed("Policy has invalid resource")
    return pattern


def _applies_somewhere(actions, resources, bucket):
    """Whether some action of the statement applies to some resource."""
    kinds = set()
    for pattern in actions:
        glob = pattern.glob(None)
        kinds.update(kind for name, kind in ACTIONS.items() if glob.match(name))
    for resource in resources:
        if resource.text == "*":
            return True
        if resource.has_variables:
            # Variables resolve per request; judge the shape only.
            if OBJECT in kinds and "/" in resource.text[len(ARN_PREFIX):]:
                return True
            if BUCKET in kinds and "/" not in resource.text[len(ARN_PREFIX):]:
                return True
            continue
        glob = resource.glob(None)
        if BUCKET in kinds and glob.match(ARN_PREFIX + bucket):
            return True
        if OBJECT in kinds and glob.may_match_after(ARN_PREFIX + bucket + "/"):
            return True
    return False


def _parse_conditions(block, variables):
    if not isinstance(block, dict):
        raise malformed("Condition must be a JSON object")
    conditions = []
    for name, keys in block.items():
        qualifier = None
        operator = name
        if ":" in operator:
            qualifier, operator = operator.split(":", 1)
            if qualifier not in ("ForAnyValue", "ForAllValues"):
                raise malformed(f"Invalid Condition type : {name}")
        if_exists = operator.endswith("IfExists") and operator != "IfExists"
        if if_exists:
            operator = operator[:-len("IfExists")]
        if operator not in OPERATORS or (operator == "Null" and (if_exists or qualifier)):
            raise malformed(f"Invalid Condition type : {name}")
        if not isinstance(keys, dict) or not keys:
            raise malformed(f"Condition {name} must map condition keys to values")
        for key, values in keys.items():
            conditions.append(Condition(operator, qualifier, if_exists, _check_key(key),
                                        _condition_values(operator, values, variables)))
    return conditions


def _check_key(key):
    if not isinstance(key, str):
        raise malformed("Policy has an invalid condition key")
    normalized = _key_name(key.strip())
    if normalized.startswith("aws:") and len(normalized) > 4:
        return normalized
    if normalized in _S3_KEYS:
        return normalized
    for prefix in _S3_KEY_PREFIXES:
        if normalized.startswith(prefix) and len(normalized) > len(prefix):
            return normalized
    raise malformed("Policy has an invalid condition key")


def _condition_values(operator, values, variables):
    if not isinstance(values, list):
        values = [values]
    if not values:
        raise malformed(f"Condition {operator} has no values")
    kind = OPERATORS[operator][0]
    out = []
    for value in values:
        if isinstance(value, bool):
            text = "true" if value else "false"
        elif isinstance(value, (int, float)):
            text = str(value)
        elif isinstance(value, str):
            text = value
        else:
            raise malformed(f"Invalid value for condition {operator}")
        if kind in (_STRING, _ARN):
            out.append(Pattern(text, variables, ignore_case=False))
        elif kind == _NUMERIC:
            number = _number(text)
            if number is None:
                raise malformed(f"Invalid numeric value for condition {operator}: {text}")
            out.append(number)
        elif kind == _DATE:
            moment = parse_date(text)
            if moment is None:
                raise malformed(f"Invalid date value for condition {operator}: {text}")
            out.append(moment)
        elif kind == _BOOL or operator == "Null":
            if text.lower() not in ("true", "false"):
                raise malformed(f"Invalid boolean value for condition {operator}: {text}")
            out.append(text.lower())
        elif kind == _BINARY:
            try:
                base64.b64decode(text, validate=True)
            except (binascii.Error, ValueError):
                raise malformed(f"Invalid base64 value for condition {operator}") from None
            out.append(text)
        elif kind == _IP:
            try:
                out.append(ipaddress.ip_network(text.strip(), strict=False))
            except ValueError:
                raise malformed(f"Invalid IP address for condition {operator}: {text}") from None
    return out


def _number(text):
    try:
        number = float(text.strip())
    except (ValueError, AttributeError):
        return None
    return number if math.isfinite(number) else None


def parse_date(text):
    """Seconds since the epoch of an ISO 8601 date or date-time (a bare
    date is midnight UTC, a time without zone is UTC) or of an epoch
    number; None if it is neither."""
    text = text.strip()
    if re.fullmatch(r"-?\d+(\.\d+)?", text) and not re.fullmatch(r"\d{8}", text):
        return float(text)
    try:
        moment = datetime.fromisoformat(text.replace("z", "Z"))
    except ValueError:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return moment.timestamp()


# -- evaluation ------------------------------------------------------------

@dataclass(frozen=True)
class Principal:
    """Who asks, as Principal entries can name it; None is anonymous. A
    service principal (``service``: its DNS name) has no key."""

    access_key_id: str | None
    user_id: str | None
    name: str | None
    service: str | None = None


@dataclass(frozen=True)
class Query:
    """One question to a policy.

    ``resource`` is the ARN asked about; with ``any_object`` it is the
    prefix ``arn:aws:s3:::bucket/`` and stands for "some object of the
    bucket". ``context`` maps lower-cased condition keys to lists of
    string values; None means the request is not known (conditions are
    then undecided, see :func:`evaluate`).
    """

    principal: Principal | None
    action: str
    resource: str
    context: dict | None
    any_object: bool = False


@dataclass(frozen=True)
class Verdict:
    """The statements that decided: the first matching Deny and Allow."""

    deny: Statement | None
    allow: Statement | None


def evaluate(policy, query, optimistic=False):
    """Which of ``policy``'s statements apply to ``query``.

    Where the query leaves something unknown (``any_object``, ``context``
    None) a statement is judged in the caller's favour when ``optimistic``
    (an Allow applies, a Deny does not) and against it otherwise: the
    optimistic answer says what *may* be allowed, the pessimistic one what
    is allowed whatever the details turn out to be.
    """
    deny = allow = None
    action = query.action.lower()
    for statement in policy.statements:
        if (deny if statement.effect == "Deny" else allow) is not None:
            continue
        lean = optimistic == (statement.effect == "Allow")
        if _statement_applies(statement, query, action, lean):
            if statement.effect == "Deny":
                deny = statement
            else:
                allow = statement
    return Verdict(deny, allow)


def _statement_applies(statement, query, action, lean):
    if statement.principals is not None:
        if not any(p.matches(query.principal) for p in statement.principals):
            return False
    elif any(p.matches(query.principal) for p in statement.not_principals):
        return False
    if statement.actions is not None:
        if not any(p.glob(None).match(action) for p in statement.actions):
            return False
    elif any(p.glob(None).match(action) for p in statement.not_actions):
        return False
    if statement.resources is not None:
        if not _any_resource(statement.resources, query, lean):
            return False
    elif _any_resource(statement.not_resources, query, not lean):
        return False
    if query.context is None:
        return lean or not statement.conditions
    return all(_condition_holds(c, query.context) for c in statement.conditions)


def _any_resource(patterns, query, lean):
    """Whether the query's resource matches one of ``patterns``; for an
    unknown object, ``lean`` says whether "could match" is enough."""
    for pattern in patterns:
        glob = pattern.glob(query.context)
        if glob is None:
            if query.context is None and lean:
                return True
            continue
        if not query.any_object:
            if glob.match(query.resource):
                return True
        elif lean and glob.may_match_after(query.resource):
            return True
        elif not lean and glob.covers_all_after(query.resource):
            return True
    return False


def _condition_holds(condition, context):
    values = context.get(condition.key)
    operator = condition.operator
    if operator == "Null":
        absent = not values
        return any((v == "true") == absent for v in condition.values)
    negated = OPERATORS[operator][1]
    if condition.qualifier == "ForAnyValue":
        if not values:
            return condition.if_exists
        return any(_one_value(condition, v, context) for v in values)
    if condition.qualifier == "ForAllValues":
        if not values:
            return True
        return all(_one_value(condition, v, context) for v in values)
    if not values:
        return condition.if_exists or negated
    if negated:
        return all(_one_value(condition, v, context) for v in values)
    return any(_one_value(condition, v, context) for v in values)


def _one_value(condition, value, context):
    """One request value against the condition's policy values: for a
    negated operator, true when it matches none of them."""
    kind, negated, comparison = OPERATORS[condition.operator]
    matched = False
    for wanted in condition.values:
        if _compare(kind, comparison, value, wanted, context):
            matched = True
            break
    return not matched if negated else matched


def _compare(kind, comparison, value, wanted, context):
    if kind in (_STRING, _ARN):
        if comparison == "like":
            glob = wanted.glob(context)
            return glob is not None and glob.match(value)
        text = wanted.literal(context)
        if text is None:
            return False
        if comparison == "ieq":
            return value.casefold() == text.casefold()
        return value == text
    if kind == _NUMERIC:
        number = _number(value)
        return number is not None and _ordered(comparison, number, wanted)
    if kind == _DATE:
        moment = parse_date(value)
        return moment is not None and _ordered(comparison, moment, wanted)
    if kind == _BOOL:
        return value.lower() == wanted
    if kind == _BINARY:
        return base64.b64encode(value.encode("utf-8")).decode("ascii") == wanted
    if kind == _IP:
        try:
            address = ipaddress.ip_address(value.split("%", 1)[0])
        except ValueError:
            return False
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped \
                and wanted.version == 4:
            address = address.ipv4_mapped
        return address.version == wanted.version and address in wanted
    return False


def _ordered(comparison, left, right):
    if comparison == "eq":
        return left == right
    if comparison == "lt":
        return left < right
    if comparison == "le":
        return left <= right
    if comparison == "gt":
        return left > right
    return left >= right
