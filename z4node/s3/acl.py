"""S3 access control lists and object ownership.

An ACL reaches the server in one of three forms (a canned ACL in
``x-amz-acl``, ``x-amz-grant-*`` headers, or an ``AccessControlPolicy``
XML body); all three are resolved here into one :class:`Acl` (an owner and
a list of grants), stored as JSON in ``Bucket.settings["acl"]`` for a
bucket and in the version's ``meta["acl"]`` for an object. A resource
without a stored ACL has the default one: its owner has FULL_CONTROL.

Object ownership (``Bucket.settings["ownership"]``) says whether ACLs
count at all. A new bucket gets the one its CreateBucket names in
``x-amz-object-ownership``, else the node's ``--object-ownership``
(``ObjectWriter`` unless set: self-hosted users publish files with canned
ACLs, as Ceph RGW and MinIO allow; AWS defaults to BucketOwnerEnforced
since April 2023). ``BucketOwnerEnforced`` disables ACLs: the bucket owner
owns every object, ACLs that grant anyone else anything are refused with
``AccessControlListNotSupported``, and reading an ACL shows the bucket
owner's FULL_CONTROL. ``BucketOwnerPreferred`` and ``ObjectWriter``
enable them (the writer owns what it writes, except that under
BucketOwnerPreferred an object written with ``bucket-owner-full-control``
belongs to the bucket owner). A bucket whose ownership controls were
deleted behaves as ObjectWriter; one stored before the setting existed,
as BucketOwnerEnforced (what it was created under).

This module answers "does this ACL grant that permission to this
requester"; whether the request is then allowed is decided in
``z4node.s3.authorization`` only.
"""

import re
from dataclasses import dataclass

from z4node.s3 import xml
from z4node.s3.errors import S3Error

ALL_USERS = "http://acs.amazonaws.com/groups/global/AllUsers"
AUTHENTICATED_USERS = "http://acs.amazonaws.com/groups/global/AuthenticatedUsers"
LOG_DELIVERY = "http://acs.amazonaws.com/groups/s3/LogDelivery"
GROUPS = (ALL_USERS, AUTHENTICATED_USERS, LOG_DELIVERY)

FULL_CONTROL, READ, WRITE, READ_ACP, WRITE_ACP = (
    "FULL_CONTROL", "READ", "WRITE", "READ_ACP", "WRITE_ACP")
PERMISSIONS = (FULL_CONTROL, WRITE, WRITE_ACP, READ, READ_ACP)
# x-amz-grant-* header -> the permission it grants.
GRANT_HEADERS = {
    "x-amz-grant-full-control": FULL_CONTROL,
    "x-amz-grant-read": READ,
    "x-amz-grant-write": WRITE,
    "x-amz-grant-read-acp": READ_ACP,
    "x-amz-grant-write-acp": WRITE_ACP,
}

ENFORCED, PREFERRED, WRITER = "BucketOwnerEnforced", "BucketOwnerPreferred", "ObjectWriter"
OWNERSHIPS = (ENFORCED, PREFERRED, WRITER)

CANNED = ("private", "public-read", "public-read-write", "authenticated-read",
          "aws-exec-read", "bucket-owner-read", "bucket-owner-full-control",
          "log-delivery-write")

USER, GROUP = "user", "group"
_XSI = "http://www.w3.org/2001/XMLSchema-instance"
_XSI_TYPE = "{%s}type" % _XSI


@dataclass(frozen=True)
class Grant:
    kind: str  # USER (value: canonical user id) or GROUP (value: group URI)
    value: str
    permission: str


@dataclass(frozen=True)
class Acl:
    owner: str
    grants: tuple

    @classmethod
    def private(cls, owner):
        return cls(owner, (Grant(USER, owner, FULL_CONTROL),))

    def to_json(self):
        return {"owner": self.owner,
                "grants": [[g.kind, g.value, g.permission] for g in self.grants]}

    @classmethod
    def from_json(cls, document):
        return cls(document["owner"],
                   tuple(Grant(kind, value, permission)
                         for kind, value, permission in document["grants"]))

    def allows(self, principal, permission, ignore_user=None):
        """Whether a grant gives ``permission`` (or FULL_CONTROL) to
        ``principal`` (an AccessKey, or None for anonymous). Grants to
        ``ignore_user`` do not count."""
        for grant in self.grants:
            if grant.permission != permission and grant.permission != FULL_CONTROL:
                continue
            if grant.kind == GROUP:
                if grant.value == ALL_USERS:
                    return True
                if grant.value == AUTHENTICATED_USERS and principal is not None:
                    return True
            elif principal is not None and grant.value == principal.user_id \
                    and grant.value != ignore_user:
                return True
        return False

    def only_full_control_to(self, user_id):
        """Whether the ACL grants nothing but FULL_CONTROL to ``user_id``
        (what a bucket with ACLs disabled accepts)."""
        return all(g == Grant(USER, user_id, FULL_CONTROL) for g in self.grants)

    def is_public(self):
        return any(g.kind == GROUP and g.value in (ALL_USERS, AUTHENTICATED_USERS)
                   for g in self.grants)


def _dedupe(grants):
    out = []
    for grant in grants:
        if grant not in out:
            out.append(grant)
    return tuple(out)


def canned(name, owner, bucket_owner, for_bucket):
    """The ACL a canned ACL name stands for."""
    grants = [Grant(USER, owner, FULL_CONTROL)]
    if name in ("public-read", "public-read-write"):
        grants.append(Grant(GROUP, ALL_USERS, READ))
    if name == "public-read-write":
        grants.append(Grant(GROUP, ALL_USERS, WRITE))
    if name == "authenticated-read":
        grants.append(Grant(GROUP, AUTHENTICATED_USERS, READ))
    if name == "log-delivery-write" and for_bucket:
        grants += [Grant(GROUP, LOG_DELIVERY, WRITE), Grant(GROUP, LOG_DELIVERY, READ_ACP)]
    # S3 ignores the bucket-owner-* ACLs on a bucket.
    if name == "bucket-owner-read" and not for_bucket:
        grants.append(Grant(USER, bucket_owner, READ))
    if name == "bucket-owner-full-control" and not for_bucket:
        grants.append(Grant(USER, bucket_owner, FULL_CONTROL))
    return Acl(owner, _dedupe(grants))


# -- reading requests ------------------------------------------------------

def has_acl_headers(headers):
    return "x-amz-acl" in headers or any(h in headers for h in GRANT_HEADERS)


def canned_name(headers):
    """The x-amz-acl value, checked; None without one."""
    name = headers.get("x-amz-acl")
    if name is None:
        return None
    name = name.strip()
    if name not in CANNED:
        raise S3Error("InvalidArgument", None,
                      extra={"ArgumentName": "x-amz-acl", "ArgumentValue": name})
    return name


def from_headers(headers, owner, bucket_owner, for_bucket, user_exists):
    """The ACL a request's x-amz-acl or x-amz-grant-* headers ask for, or
    None when it has neither."""
    name = canned_name(headers)
    grant_headers = [h for h in GRANT_HEADERS if h in headers]
    if name is not None and grant_headers:
        raise S3Error("InvalidRequest",
                      "Specifying both Canned ACLs and Header Grants is not allowed")
    if name is not None:
        return canned(name, owner, bucket_owner, for_bucket)
    if not grant_headers:
        return None
    grants = []
    for header in grant_headers:
        for kind, value in _grantees(headers[header], header):
            grants.append(_grant(kind, value, GRANT_HEADERS[header], user_exists))
    return Acl(owner, _dedupe(grants))


_GRANTEE = re.compile(r'\s*([A-Za-z]+)\s*=\s*(?:"([^"]*)"|([^,\s]*))\s*(?:,|$)')


def _grantees(text, header):
    """``id="...", uri="..."`` -> [(type, value)]."""
    out = []
    position = 0
    text = text.strip()
    while position < len(text):
        found = _GRANTEE.match(text, position)
        if found is None or found.end() == position:
            raise S3Error("InvalidArgument", f"Invalid {header} header value",
                          extra={"ArgumentName": header, "ArgumentValue": text})
        value = found.group(2) if found.group(2) is not None else found.group(3)
        out.append((found.group(1), value))
        position = found.end()
    if not out:
        raise S3Error("InvalidArgument", f"Invalid {header} header value",
                      extra={"ArgumentName": header, "ArgumentValue": text})
    return out


def _grant(kind, value, permission, user_exists):
    kind = kind.lower()
    if kind == "id":
        if not user_exists(value):
            raise S3Error("InvalidArgument", "Invalid id",
                          extra={"ArgumentName": "CanonicalUser/ID", "ArgumentValue": value})
        return Grant(USER, value, permission)
    if kind == "uri":
        if value not in GROUPS:
            raise S3Error("InvalidArgument", "Invalid group uri",
                          extra={"ArgumentName": "Group/URI", "ArgumentValue": value})
        return Grant(GROUP, value, permission)
    if kind == "emailaddress":
        raise S3Error("UnresolvableGrantByEmailAddress")
    raise S3Error("InvalidArgument", "Argument format not recognized",
                  extra={"ArgumentName": "x-amz-grant", "ArgumentValue": kind})


def from_xml(document, owner, user_exists):
    """The ACL of a parsed AccessControlPolicy document (the resource's
    owner stays ``owner``: an ACL never changes who owns a thing)."""
    listing = document.find("AccessControlList")
    if listing is None:
        raise S3Error("MalformedACLError")
    grants = []
    for element in listing:
        if element.tag != "Grant":
            raise S3Error("MalformedACLError")
        grantee = element.find("Grantee")
        permission = (xml.text(element, "Permission") or "").strip()
        if grantee is None or permission not in PERMISSIONS:
            raise S3Error("MalformedACLError")
        kind = grantee.attrib.get(_XSI_TYPE)
        user_id = (xml.text(grantee, "ID") or "").strip()
        uri = (xml.text(grantee, "URI") or "").strip()
        email = (xml.text(grantee, "EmailAddress") or "").strip()
        if kind is None:
            kind = ("CanonicalUser" if user_id else "Group" if uri
                    else "AmazonCustomerByEmail" if email else None)
        if kind == "CanonicalUser" and user_id:
            grants.append(_grant("id", user_id, permission, user_exists))
        elif kind == "Group" and uri:
            grants.append(_grant("uri", uri, permission, user_exists))
        elif kind == "AmazonCustomerByEmail" and email:
            raise S3Error("UnresolvableGrantByEmailAddress")
        else:
            raise S3Error("MalformedACLError")
    return Acl(owner, _dedupe(grants))


def to_xml(acl, names):
    """An AccessControlPolicy document; ``names`` maps user ids to
    display names."""
    grants = []
    for grant in acl.grants:
        if grant.kind == USER:
            grantee = (f'Grantee xmlns:xsi="{_XSI}" xsi:type="CanonicalUser"',
                       [("ID", grant.value), ("DisplayName", names.get(grant.value, ""))])
        else:
            grantee = (f'Grantee xmlns:xsi="{_XSI}" xsi:type="Group"', [("URI", grant.value)])
        grants.append(("Grant", [grantee, ("Permission", grant.permission)]))
    return xml.document("AccessControlPolicy", [
        ("Owner", [("ID", acl.owner), ("DisplayName", names.get(acl.owner, ""))]),
        ("AccessControlList", grants),
    ])


# -- ownership and the stored ACLs -----------------------------------------

def ownership(bucket):
    """The bucket's ObjectOwnership setting; None when its ownership
    controls were deleted (ACLs on, the writer owns objects)."""
    return bucket.settings.get("ownership", ENFORCED)


def acls_enabled(bucket):
    return ownership(bucket) != ENFORCED


def bucket_acl(bucket):
    stored = bucket.settings.get("acl")
    if stored is None or not acls_enabled(bucket):
        return Acl.private(bucket.owner)
    return Acl.from_json(stored)


def new_object_owner(stored_acl, writer):
    """Who owns a new object whose ACL (as :func:`new_object_acl` gave it)
    is ``stored_acl``: the owner that ACL names -- the bucket owner where
    ACLs are disabled, or for ``bucket-owner-full-control`` under
    BucketOwnerPreferred -- else its ``writer``. Stored as the version's
    owner, which listings report."""
    return Acl.from_json(stored_acl).owner if stored_acl is not None else writer


def reported_owner(bucket, owner):
    """The owner a listing shows for a version stored with ``owner``: the
    bucket owner owns every object while ACLs are disabled, also those
    written before they were."""
    return owner if acls_enabled(bucket) else bucket.owner


def object_acl(bucket, version):
    """The ACL that governs ``version`` of an object in ``bucket``."""
    if not acls_enabled(bucket):
        return Acl.private(bucket.owner)
    stored = version.meta.get("acl")
    if stored is None:
        return Acl.private(version.owner)
    return Acl.from_json(stored)


def check_ownership_header(headers):
    value = headers.get("x-amz-object-ownership")
    if value is None:
        return None
    value = value.strip()
    if value not in OWNERSHIPS:
        raise S3Error("InvalidArgument", "Invalid x-amz-object-ownership header",
                      extra={"ArgumentName": "x-amz-object-ownership",
                             "ArgumentValue": value})
    return value


def new_bucket_settings(headers, owner, user_exists, default_ownership):
    """The ownership and ACL settings a CreateBucket request asks for
    (``default_ownership`` without an x-amz-object-ownership header)."""
    mode = check_ownership_header(headers) or default_ownership
    requested = from_headers(headers, owner, owner, True, user_exists)
    settings = {"ownership": mode}
    if requested is not None and not requested.only_full_control_to(owner):
        if mode == ENFORCED:
            raise S3Error("InvalidBucketAclWithObjectOwnership")
        settings["acl"] = requested.to_json()
    return settings


def new_object_acl(bucket, writer, headers, user_exists):
    """The ACL to store with an object ``writer`` (a user id) writes with
    these headers, as JSON, or None for the default. Refuses ACLs a
    bucket with ACLs disabled does not take."""
    name = canned_name(headers)
    mode = ownership(bucket)
    if mode == ENFORCED:
        requested = from_headers(headers, bucket.owner, bucket.owner, False, user_exists)
        if requested is not None and not requested.only_full_control_to(bucket.owner):
            raise S3Error("AccessControlListNotSupported")
        # The bucket owner owns it, also if ACLs are enabled later.
        return None if writer == bucket.owner else Acl.private(bucket.owner).to_json()
    owner = writer
    if mode == PREFERRED and name == "bucket-owner-full-control":
        owner = bucket.owner
    requested = from_headers(headers, owner, bucket.owner, False, user_exists)
    if requested is None:
        requested = Acl.private(owner)
    if requested == Acl.private(owner) and owner == writer:
        return None
    return requested.to_json()
