"""The decision function, table-driven: every principal x operation x
resource x condition context x policy x ACL setting, with the expected
answer derived from the rules of ``z4node.s3.authorization`` written out
again here in their plainest form (each policy statement carries a Python
predicate saying when it applies), then hand-written tricky cases."""

import itertools
import json

from twisted.internet.defer import succeed
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from z4node.hlc import HybridLogicalClock
from z4node.objects.system import SystemTables
from z4node.s3 import acl as acls
from z4node.s3 import authorization as authz
from z4node.s3 import policy as policies
from z4node.s3.authorization import AccessRequest, decide
from z4node.s3.errors import S3Error


class MemoryMeta:
    """Enough of MetaStore for SystemTables: every write succeeds."""

    def load_system_tables(self):
        return succeed(([], [], []))

    def save_key(self, key):
        return succeed(None)

    def save_bucket(self, bucket, precondition=None):
        return succeed(None)

    def save_grant(self, grant):
        return succeed(None)

    def load_kms_keys(self):
        return succeed([])

    def save_kms_key(self, key):
        return succeed(None)


def run(coroutine):
    from twisted.internet.defer import Deferred
    result = []
    Deferred.fromCoroutine(coroutine).addBoth(result.append)
    return result[0]


class World:
    """A system table with bucket ``b`` (created by ``owner``) and keys
    with every kind of grant on it."""

    def __init__(self):
        self.clock = Clock()
        self.clock.advance(1717243200)  # 2024-06-01T12:00:00Z
        self.system = SystemTables(MemoryMeta(), HybridLogicalClock(self.clock), self.clock,
                                   random_bytes=lambda n: bytes(range(n)))
        self.keys = {}
        counter = itertools.count()

        def key(name, admin=False):
            number = next(counter)
            self.keys[name] = run(self.system.create_key(
                name, is_admin=admin, access_key_id=f"Z4TEST{number:014d}"))
        key("admin", admin=True)
        for name in ("owner", "reader", "writer", "alice", "bob"):
            key(name)
        self.keys["anonymous"] = None
        run(self.system.create_bucket("b", self.keys["owner"], {"ownership": acls.ENFORCED}))
        run(self.system.create_bucket("other", self.keys["admin"]))
        run(self.system.set_grant("b", self.keys["reader"].access_key_id, True, False, False))
        run(self.system.set_grant("b", self.keys["writer"].access_key_id, False, True, False))

    def set_settings(self, **changes):
        def update(settings):
            for name, value in changes.items():
                if value is None:
                    settings.pop(name, None)
                else:
                    settings[name] = value
        run(self.system.update_bucket_settings("b", update))

    def decide(self, who, operation, object_key=None, context=None, object_acl=None,
               query=None, optimistic=False, bucket="b"):
        need = authz.need_for(operation, query)
        return decide(self.system, AccessRequest(self.keys[who], need, bucket, object_key,
                                                 context, object_acl), optimistic)


# -- the rules, written out plainly ------------------------------------------

# operation -> (S3 action, grant level that covers it, ACL permission that
# covers it, whether that is the object's ACL, whether it names an object)
OPERATIONS = {
    "HeadBucket": ("s3:ListBucket", "read", "READ", False, False),
    "GetBucketLocation": ("s3:GetBucketLocation", "read", None, False, False),
    "GetBucketVersioning": ("s3:GetBucketVersioning", "read", None, False, False),
    "ListObjects": ("s3:ListBucket", "read", "READ", False, False),
    "ListObjectsV2": ("s3:ListBucket", "read", "READ", False, False),
    "ListMultipartUploads": ("s3:ListBucketMultipartUploads", "write", "READ", False, False),
    "DeleteBucket": ("s3:DeleteBucket", "owner", None, False, False),
    "GetBucketPolicy": ("s3:GetBucketPolicy", "owner", None, False, False),
    "PutBucketPolicy": ("s3:PutBucketPolicy", "owner", None, False, False),
    "DeleteBucketPolicy": ("s3:DeleteBucketPolicy", "owner", None, False, False),
    "GetBucketPolicyStatus": ("s3:GetBucketPolicyStatus", "owner", None, False, False),
    "GetPublicAccessBlock": ("s3:GetBucketPublicAccessBlock", "owner", None, False, False),
    "PutPublicAccessBlock": ("s3:PutBucketPublicAccessBlock", "owner", None, False, False),
    "GetBucketLogging": ("s3:GetBucketLogging", "owner", None, False, False),
    "PutBucketLogging": ("s3:PutBucketLogging", "owner", None, False, False),
    "DeletePublicAccessBlock": ("s3:PutBucketPublicAccessBlock", "owner", None, False,
                                False),
    "GetBucketAcl": ("s3:GetBucketAcl", "owner", "READ_ACP", False, False),
    "PutBucketAcl": ("s3:PutBucketAcl", "owner", "WRITE_ACP", False, False),
    "GetBucketOwnershipControls": ("s3:GetBucketOwnershipControls", "owner", None, False,
                                   False),
    "PutBucketOwnershipControls": ("s3:PutBucketOwnershipControls", "owner", None, False,
                                   False),
    "DeleteBucketOwnershipControls": ("s3:PutBucketOwnershipControls", "owner", None, False,
                                      False),
    "GetBucketEncryption": ("s3:GetEncryptionConfiguration", "owner", None, False, False),
    "PutBucketEncryption": ("s3:PutEncryptionConfiguration", "owner", None, False, False),
    "DeleteBucketEncryption": ("s3:PutEncryptionConfiguration", "owner", None, False, False),
    "GetObject": ("s3:GetObject", "read", "READ", True, True),
    "HeadObject": ("s3:GetObject", "read", "READ", True, True),
    "GetObjectAttributes": ("s3:GetObjectAttributes", "read", "READ", True, True),
    "GetObjectAcl": ("s3:GetObjectAcl", "read", "READ_ACP", True, True),
    "PutObjectAcl": ("s3:PutObjectAcl", "owner", "WRITE_ACP", True, True),
    "PutObject": ("s3:PutObject", "write", "WRITE", False, True),
    "CopyObject": ("s3:PutObject", "write", "WRITE", False, True),
    "DeleteObject": ("s3:DeleteObject", "write", "WRITE", False, True),
    "CreateMultipartUpload": ("s3:PutObject", "write", "WRITE", False, True),
    "UploadPart": ("s3:PutObject", "write", "WRITE", False, True),
    "UploadPartCopy": ("s3:PutObject", "write", "WRITE", False, True),
    "CompleteMultipartUpload": ("s3:PutObject", "write", "WRITE", False, True),
    "AbortMultipartUpload": ("s3:AbortMultipartUpload", "write", "WRITE", False, True),
    "ListParts": ("s3:ListMultipartUploadParts", "write", "WRITE", False, True),
    "ListObjectVersions": ("s3:ListBucketVersions", "read", "READ", False, False),
    "PutBucketVersioning": ("s3:PutBucketVersioning", "owner", None, False, False),
    "GetBucketTagging": ("s3:GetBucketTagging", "owner", None, False, False),
    "PutBucketTagging": ("s3:PutBucketTagging", "owner", None, False, False),
    "DeleteBucketTagging": ("s3:PutBucketTagging", "owner", None, False, False),
    "GetBucketLifecycleConfiguration": ("s3:GetLifecycleConfiguration", "owner", None,
                                        False, False),
    "PutBucketLifecycleConfiguration": ("s3:PutLifecycleConfiguration", "owner", None,
                                        False, False),
    "DeleteBucketLifecycle": ("s3:PutLifecycleConfiguration", "owner", None, False, False),
    "GetBucketCors": ("s3:GetBucketCORS", "owner", None, False, False),
    "PutBucketCors": ("s3:PutBucketCORS", "owner", None, False, False),
    "DeleteBucketCors": ("s3:PutBucketCORS", "owner", None, False, False),
    "GetObjectLockConfiguration": ("s3:GetBucketObjectLockConfiguration", "owner", None,
                                   False, False),
    "PutObjectLockConfiguration": ("s3:PutBucketObjectLockConfiguration", "owner", None,
                                   False, False),
    "GetObjectTagging": ("s3:GetObjectTagging", "read", None, False, True),
    "PutObjectTagging": ("s3:PutObjectTagging", "write", None, False, True),
    "DeleteObjectTagging": ("s3:DeleteObjectTagging", "write", None, False, True),
    "GetObjectRetention": ("s3:GetObjectRetention", "read", None, False, True),
    "PutObjectRetention": ("s3:PutObjectRetention", "write", None, False, True),
    "GetObjectLegalHold": ("s3:GetObjectLegalHold", "read", None, False, True),
    "PutObjectLegalHold": ("s3:PutObjectLegalHold", "write", None, False, True),
    "PostObject": ("s3:PutObject", "write", "WRITE", False, True),
}
GRANTS = {"owner": {"read", "write", "owner"}, "reader": {"read"}, "writer": {"write"}}
POLICY_OPERATIONS = {"s3:GetBucketPolicy", "s3:PutBucketPolicy", "s3:DeleteBucketPolicy"}
OBJECT_KEYS = ("public/a.txt", "private/b.txt", "home/alice/c.txt")
CONTEXTS = {
    "lan": {"aws:sourceip": ["10.0.0.5"], "aws:securetransport": ["false"]},
    "wan-tls": {"aws:sourceip": ["203.0.113.9"], "aws:securetransport": ["true"]},
}


class Rule:
    """A policy statement and, independently, when it applies."""

    def __init__(self, name, document, applies):
        self.name = name
        self.document = dict(document, Sid=name)
        self.effect = document["Effect"]
        self.applies = applies


def principal_arn(name):
    return f"arn:aws:iam::123456789012:user/{name}"


def build_rules(world):
    alice_id = world.keys["alice"].access_key_id
    return [
        Rule("PublicRead", {
            "Effect": "Allow", "Principal": "*", "Action": "s3:GetObject",
            "Resource": "arn:aws:s3:::b/public/*"},
            lambda who, action, key, ctx: action == "s3:GetObject"
            and key is not None and key.startswith("public/")),
        Rule("AliceHome", {
            "Effect": "Allow", "Principal": {"AWS": principal_arn("alice")},
            "Action": ["s3:GetObject", "s3:PutObject", "s3:DeleteObject"],
            "Resource": "arn:aws:s3:::b/home/${aws:username}/*"},
            lambda who, action, key, ctx: who == "alice"
            and action in ("s3:GetObject", "s3:PutObject", "s3:DeleteObject")
            and key is not None and key.startswith("home/alice/")),
        Rule("LanList", {
            "Effect": "Allow", "Principal": {"AWS": "*"}, "Action": "s3:List*",
            "Resource": "arn:aws:s3:::b",
            "Condition": {"IpAddress": {"aws:SourceIp": "10.0.0.0/8"}}},
            lambda who, action, key, ctx: action.startswith("s3:List") and key is None
            and ctx == "lan"),
        Rule("DenyBob", {
            "Effect": "Deny", "Principal": {"AWS": world.keys["bob"].user_id},
            "Action": "s3:*", "Resource": ["arn:aws:s3:::b", "arn:aws:s3:::b/*"]},
            lambda who, action, key, ctx: who == "bob"),
        Rule("BobWrites", {
            "Effect": "Allow", "Principal": {"AWS": [world.keys["bob"].access_key_id]},
            "Action": "s3:PutObject", "Resource": "arn:aws:s3:::b/*"},
            lambda who, action, key, ctx: who == "bob" and action == "s3:PutObject"),
        Rule("DenyInsecureWrites", {
            "Effect": "Deny", "Principal": "*", "Action": ["s3:Put*", "s3:Delete*"],
            "Resource": "arn:aws:s3:::b/*",
            "Condition": {"Bool": {"aws:SecureTransport": "false"}}},
            lambda who, action, key, ctx: key is not None and ctx == "lan"
            and (action.startswith("s3:Put") or action.startswith("s3:Delete"))),
        Rule("PrivateOnlyForOwner", {
            "Effect": "Deny", "NotPrincipal": {"AWS": principal_arn("owner")},
            "Action": "s3:GetObject*", "Resource": "arn:aws:s3:::b/private/*"},
            lambda who, action, key, ctx: who != "owner"
            and action.startswith("s3:GetObject")
            and key is not None and key.startswith("private/")),
        Rule("EveryoneButAliceMayListUploads", {
            "Effect": "Allow", "Principal": "*",
            "NotAction": ["s3:ListBucket", "s3:Get*", "s3:Put*", "s3:Delete*",
                          "s3:AbortMultipartUpload", "s3:ListMultipartUploadParts"],
            "Resource": "arn:aws:s3:::b",
            "Condition": {"StringNotEquals": {"aws:username": "alice"}}},
            lambda who, action, key, ctx: key is None and who != "alice"
            and action in ("s3:ListBucketMultipartUploads", "s3:ListBucketVersions")),
        Rule("AliceReadsAclsByKeyId", {
            "Effect": "Allow", "Principal": {"AWS": alice_id},
            "Action": ["s3:GetBucketAcl", "s3:GetObjectAcl"],
            "NotResource": "arn:aws:s3:::b/private/*"},
            lambda who, action, key, ctx: who == "alice"
            and action in ("s3:GetBucketAcl", "s3:GetObjectAcl")
            and not (key is not None and key.startswith("private/"))),
    ]


# ACL settings: (bucket settings, object ACL of each key or None, and
# whether the bucket / object ACL gives ``permission`` to ``who``).
def acl_settings(world):
    owner = world.keys["owner"].user_id
    alice = world.keys["alice"].user_id
    private = acls.Acl.private(owner)

    def object_acls(special=None):
        return {key: (special if special and key == "private/b.txt" else private)
                for key in OBJECT_KEYS}
    return {
        "acls-off": ({"ownership": acls.ENFORCED}, {k: None for k in OBJECT_KEYS},
                     lambda who, permission, on_object, key: False),
        "bucket-public-read": (
            {"ownership": acls.WRITER,
             "acl": acls.canned("public-read", owner, owner, True).to_json()},
            object_acls(),
            lambda who, permission, on_object, key: not on_object and permission == "READ"),
        "bucket-authenticated-write": (
            {"ownership": acls.WRITER, "acl": acls.Acl(owner, (
                acls.Grant(acls.USER, owner, "FULL_CONTROL"),
                acls.Grant(acls.GROUP, acls.AUTHENTICATED_USERS, "WRITE"))).to_json()},
            object_acls(),
            lambda who, permission, on_object, key: not on_object and permission == "WRITE"
            and who != "anonymous"),
        "object-public-read": (
            {"ownership": acls.PREFERRED}, object_acls(acls.canned(
                "public-read", owner, owner, False)),
            lambda who, permission, on_object, key: on_object and permission == "READ"
            and key == "private/b.txt"),
        "object-alice-full-control": (
            {"ownership": acls.WRITER}, object_acls(acls.Acl(owner, (
                acls.Grant(acls.USER, owner, "FULL_CONTROL"),
                acls.Grant(acls.USER, alice, "FULL_CONTROL")))),
            lambda who, permission, on_object, key: on_object and who == "alice"
            and key == "private/b.txt"),
        # Enforced ownership ignores whatever ACL is stored.
        "acls-off-with-stale-acl": (
            {"ownership": acls.ENFORCED,
             "acl": acls.canned("public-read-write", owner, owner, True).to_json()},
            object_acls(acls.canned("public-read", owner, owner, False)),
            lambda who, permission, on_object, key: False),
    }


def expected(who, operation, key, ctx, rules, acl_allows):
    """The answer by the rules, in the order the module docstring gives."""
    action, level, permission, on_object, _ = OPERATIONS[operation]
    for rule in rules:
        if rule.effect == "Deny" and rule.applies(who, action, key, ctx):
            if not (action in POLICY_OPERATIONS and who in ("admin", "owner")):
                return False
    if who == "admin":
        return True
    if level in GRANTS.get(who, ()) or "owner" in GRANTS.get(who, ()):
        return True
    if any(r.effect == "Allow" and r.applies(who, action, key, ctx) for r in rules):
        return True
    return bool(permission) and acl_allows(who, permission, on_object, key)


class DecisionTableTests(SynchronousTestCase):
    def test_the_table(self):
        world = World()
        rules = build_rules(world)
        settings = acl_settings(world)
        policies = [("no policy", [])]
        policies += [(rule.name, [rule]) for rule in rules]
        policies += [("all statements", rules),
                     ("deny and allow for bob", [r for r in rules if "Bob" in r.name]),
                     ("public and private", [rules[0], rules[6]])]
        combinations = [(name, chosen, "acls-off") for name, chosen in policies]
        combinations += [(policy_name, chosen, acl_name)
                         for acl_name in settings if acl_name != "acls-off"
                         for policy_name, chosen in policies[:1] + policies[-3:-2]]
        cases = failures = 0
        mismatches = []
        for policy_name, chosen, acl_name in combinations:
            bucket_settings, object_acls, acl_allows = settings[acl_name]
            policy_text = json.dumps({"Version": "2012-10-17",
                                      "Statement": [r.document for r in chosen]})
            world.set_settings(ownership=bucket_settings["ownership"],
                               acl=bucket_settings.get("acl"),
                               policy=policy_text if chosen else None)
            for who, operation, ctx in itertools.product(world.keys, OPERATIONS, CONTEXTS):
                keys = OBJECT_KEYS if OPERATIONS[operation][4] else (None,)
                for key in keys:
                    context = dict(CONTEXTS[ctx])
                    if world.keys[who] is not None:
                        context["aws:username"] = [world.keys[who].name]
                    got = world.decide(who, operation, key, context,
                                       object_acls.get(key) if key else None)
                    want = expected(who, operation, key, ctx, chosen, acl_allows)
                    cases += 1
                    if got.allowed != want:
                        failures += 1
                        if len(mismatches) < 15:
                            mismatches.append(
                                f"{policy_name} / {acl_name}: {who} {operation} {key} {ctx}: "
                                f"got {got}, want {want}")
        self.assertGreater(cases, 10000)
        self.assertEqual(failures, 0, "\n".join(mismatches))

    def test_account_operations(self):
        world = World()
        for who in world.keys:
            for operation in ("ListBuckets", "CreateBucket"):
                got = world.decide(who, operation, bucket=None)
                self.assertEqual(got.allowed, who != "anonymous", (who, operation))


class TrickyCaseTests(SynchronousTestCase):
    def setUp(self):
        self.world = World()

    def policy(self, *statements):
        self.world.set_settings(policy=json.dumps(
            {"Version": "2012-10-17", "Statement": list(statements)}))

    def test_deny_all_still_lets_owner_and_admin_repair_the_policy(self):
        self.policy({"Effect": "Deny", "Principal": "*", "Action": "s3:*",
                     "Resource": ["arn:aws:s3:::b", "arn:aws:s3:::b/*"]})
        for who in ("admin", "owner"):
            for operation in ("GetBucketPolicy", "PutBucketPolicy", "DeleteBucketPolicy"):
                self.assertTrue(self.world.decide(who, operation).allowed, (who, operation))
            self.assertFalse(self.world.decide(who, "GetObject", "k").allowed)
            self.assertFalse(self.world.decide(who, "ListObjects").allowed)
            self.assertFalse(self.world.decide(who, "GetBucketPolicyStatus").allowed)
        decision = self.world.decide("admin", "DeleteBucket")
        self.assertEqual((decision.allowed, decision.via), (False, "deny"))
        self.assertIn("#1", decision.reason)
        self.assertFalse(self.world.decide("reader", "GetBucketPolicy").allowed)

    def test_an_unreadable_stored_policy_fails_closed(self):
        self.world.set_settings(policy='{"Statement": "no longer valid"}')
        self.assertFalse(self.world.decide("admin", "GetObject", "k", {}).allowed)
        self.assertFalse(self.world.decide("reader", "ListObjects", None, {}).allowed)
        self.assertTrue(self.world.decide("owner", "DeleteBucketPolicy", None, {}).allowed)
        self.flushLoggedErrors()

    def test_a_policy_on_one_bucket_leaves_the_others_alone(self):
        self.policy({"Effect": "Deny", "Principal": "*", "Action": "s3:*",
                     "Resource": "arn:aws:s3:::b/*"})
        self.assertTrue(self.world.decide("admin", "GetObject", "k", bucket="other").allowed)

    def test_acl_grants_to_the_bucket_owner_do_not_outlive_its_grant(self):
        owner = self.world.keys["owner"]
        self.world.set_settings(ownership=acls.WRITER, acl=acls.Acl.private(
            owner.user_id).to_json())
        self.assertTrue(self.world.decide("owner", "ListObjects").allowed)
        run(self.world.system.set_grant("b", owner.access_key_id, False, False, False))
        self.assertFalse(self.world.decide("owner", "ListObjects").allowed)
        self.assertFalse(self.world.decide("owner", "GetObject", "k",
                                           object_acl=acls.Acl.private(owner.user_id)).allowed)
        # ...while the same ACL line for another key counts.
        alice = self.world.keys["alice"]
        self.assertTrue(self.world.decide(
            "alice", "GetObject", "k", object_acl=acls.Acl.private(alice.user_id)).allowed)

    def test_anonymous_matches_only_everyone(self):
        self.policy({"Effect": "Allow", "Principal": {"AWS": "arn:aws:iam:::user/alice"},
                     "Action": "s3:GetObject", "Resource": "arn:aws:s3:::b/*"},
                    {"Effect": "Allow", "Principal": "*", "Action": "s3:ListBucket",
                     "Resource": "arn:aws:s3:::b",
                     "Condition": {"Null": {"aws:username": "true"}}})
        self.assertFalse(self.world.decide("anonymous", "GetObject", "k", {}).allowed)
        self.assertTrue(self.world.decide("alice", "GetObject", "k", {}).allowed)
        self.assertTrue(self.world.decide("anonymous", "ListObjects", None, {}).allowed)
        self.assertFalse(self.world.decide("bob", "ListObjects", None,
                                           {"aws:username": ["bob"]}).allowed)
        self.world.set_settings(policy=None, ownership=acls.WRITER, acl=acls.Acl(
            self.world.keys["owner"].user_id,
            (acls.Grant(acls.GROUP, acls.AUTHENTICATED_USERS, "READ"),)).to_json())
        self.assertFalse(self.world.decide("anonymous", "HeadBucket", None, {}).allowed)
        self.assertTrue(self.world.decide("bob", "HeadBucket", None, {}).allowed)

    def test_deny_with_not_principal_binds_the_admin_key(self):
        self.policy({"Effect": "Deny", "NotPrincipal": {"AWS": "arn:aws:iam:::user/owner"},
                     "Action": "s3:DeleteObject", "Resource": "arn:aws:s3:::b/*"})
        self.assertFalse(self.world.decide("admin", "DeleteObject", "k", {}).allowed)
        self.assertTrue(self.world.decide("owner", "DeleteObject", "k", {}).allowed)
        self.assertTrue(self.world.decide("admin", "PutObject", "k", {}).allowed)

    def test_a_missing_bucket(self):
        self.assertTrue(self.world.decide("admin", "ListObjects", bucket="gone").allowed)
        for who in ("owner", "reader", "alice", "anonymous"):
            self.assertFalse(self.world.decide(who, "ListObjects", bucket="gone").allowed)

    def test_delete_objects_asks_optimistically_then_per_key(self):
        self.policy({"Effect": "Allow", "Principal": {"AWS": "arn:aws:iam:::user/alice"},
                     "Action": "s3:DeleteObject", "Resource": "arn:aws:s3:::b/tmp/*"},
                    {"Effect": "Deny", "Principal": "*", "Action": "s3:DeleteObject",
                     "Resource": "arn:aws:s3:::b/tmp/keep/*"})
        world = self.world
        self.assertTrue(world.decide("alice", "DeleteObjects", authz.ANY_OBJECT, {},
                                     optimistic=True).allowed)
        self.assertFalse(world.decide("alice", "DeleteObjects", authz.ANY_OBJECT, {}).allowed)
        self.assertFalse(world.decide("bob", "DeleteObjects", authz.ANY_OBJECT, {},
                                      optimistic=True).allowed)
        self.assertTrue(world.decide("alice", "DeleteObject", "tmp/x", {}).allowed)
        self.assertFalse(world.decide("alice", "DeleteObject", "tmp/keep/x", {}).allowed)
        self.assertFalse(world.decide("alice", "DeleteObject", "other", {}).allowed)
        # A writer's grant stops at the Deny too.
        self.assertFalse(world.decide("writer", "DeleteObject", "tmp/keep/x", {}).allowed)

    def test_version_requests_need_the_version_actions(self):
        self.policy({"Effect": "Allow", "Principal": "*", "Action": "s3:GetObject",
                     "Resource": "arn:aws:s3:::b/*"})
        self.assertTrue(self.world.decide("anonymous", "GetObject", "k", {}).allowed)
        self.assertFalse(self.world.decide("anonymous", "GetObject", "k", {},
                                           query={"versionId": "null"}).allowed)
        self.policy({"Effect": "Allow", "Principal": "*", "Action": "s3:GetObjectVersion",
                     "Resource": "arn:aws:s3:::b/*"})
        self.assertTrue(self.world.decide("anonymous", "GetObject", "k", {},
                                          query={"versionId": "null"}).allowed)
        # A read grant covers both.
        self.assertTrue(self.world.decide("reader", "GetObject", "k", {},
                                          query={"versionId": "null"}).allowed)

    def test_listing_conditions(self):
        self.policy({"Effect": "Allow", "Principal": "*", "Action": "s3:ListBucket",
                     "Resource": "arn:aws:s3:::b",
                     "Condition": {"StringLike": {"s3:prefix": "home/${aws:username}/*"},
                                   "NumericLessThanEquals": {"s3:max-keys": "100"}}})

        def lists(who, **query):
            context = {"s3:" + k.replace("_", "-"): [v] for k, v in query.items()}
            if self.world.keys[who] is not None:
                context["aws:username"] = [who]
            return self.world.decide(who, "ListObjectsV2", None, context).allowed
        self.assertTrue(lists("alice", prefix="home/alice/", max_keys="10"))
        self.assertFalse(lists("alice", prefix="home/bob/", max_keys="10"))
        self.assertFalse(lists("alice", prefix="home/alice/", max_keys="1000"))
        self.assertFalse(lists("alice", prefix="home/alice/"))
        self.assertFalse(lists("anonymous", prefix="home//", max_keys="1"))

    def test_time_windows(self):
        self.policy({"Effect": "Allow", "Principal": "*", "Action": "s3:GetObject",
                     "Resource": "arn:aws:s3:::b/*",
                     "Condition": {"DateGreaterThan": {"aws:CurrentTime": "2024-01-01T00:00:00Z"},
                                   "DateLessThan": {"aws:CurrentTime": "2024-07-01T00:00:00Z"}}})
        for now, allowed in (("2023-12-31T23:59:59Z", False), ("2024-03-01T00:00:00Z", True),
                             ("2024-07-01T00:00:00Z", False)):
            self.assertEqual(self.world.decide("anonymous", "GetObject", "k",
                                               {"aws:currenttime": [now]}).allowed, allowed)

    def test_existing_and_request_tags(self):
        self.policy({"Effect": "Allow", "Principal": "*", "Action": "s3:GetObject",
                     "Resource": "arn:aws:s3:::b/*",
                     "Condition": {"StringEquals": {"s3:ExistingObjectTag/Team": "blue"}}},
                    {"Effect": "Deny", "Principal": "*", "Action": "s3:PutObject",
                     "Resource": "arn:aws:s3:::b/*",
                     "Condition": {"ForAnyValue:StringEquals": {
                         "s3:RequestObjectTagKeys": ["secret"]}}})
        world = self.world
        self.assertTrue(world.decide("anonymous", "GetObject", "k",
                                     {"s3:existingobjecttag/Team": ["blue"]}).allowed)
        self.assertFalse(world.decide("anonymous", "GetObject", "k",
                                      {"s3:existingobjecttag/team": ["blue"]}).allowed)
        self.assertFalse(world.decide("writer", "PutObject", "k",
                                      {"s3:requestobjecttagkeys": ["a", "secret"]}).allowed)
        self.assertTrue(world.decide("writer", "PutObject", "k",
                                     {"s3:requestobjecttagkeys": ["a"]}).allowed)

    def test_the_acl_header_condition(self):
        self.policy({"Effect": "Deny", "Principal": "*", "Action": "s3:PutObject",
                     "Resource": "arn:aws:s3:::b/*",
                     "Condition": {"StringNotEquals": {
                         "s3:x-amz-acl": "bucket-owner-full-control"}}})
        world = self.world
        self.assertFalse(world.decide("writer", "PutObject", "k", {}).allowed)
        self.assertFalse(world.decide("writer", "PutObject", "k",
                                      {"s3:x-amz-acl": ["public-read"]}).allowed)
        self.assertTrue(world.decide("writer", "PutObject", "k", {
            "s3:x-amz-acl": ["bucket-owner-full-control"]}).allowed)

    def test_unknown_requests_in_key_summaries(self):
        self.policy({"Effect": "Allow", "Principal": {"AWS": "arn:aws:iam:::user/alice"},
                     "Action": "s3:GetObject", "Resource": "arn:aws:s3:::b/*"},
                    {"Effect": "Allow", "Principal": {"AWS": "arn:aws:iam:::user/alice"},
                     "Action": "s3:PutObject", "Resource": "arn:aws:s3:::b/uploads/*"},
                    {"Effect": "Allow", "Principal": {"AWS": "arn:aws:iam:::user/alice"},
                     "Action": "s3:ListBucket", "Resource": "arn:aws:s3:::b",
                     "Condition": {"IpAddress": {"aws:SourceIp": "10.0.0.0/8"}}})
        summary = authz.summarize(self.world.system, self.world.keys["alice"])
        self.assertEqual(len(summary), 1)
        self.assertEqual(summary[0]["bucket"], "b")
        self.assertEqual(summary[0]["always"], ["s3:GetObject"])
        self.assertEqual(summary[0]["sometimes"], ["s3:ListBucket", "s3:PutObject"])
        reader = authz.summarize(self.world.system, self.world.keys["reader"])
        self.assertIn("s3:GetObject", reader[0]["always"])
        self.assertNotIn("s3:PutObject", reader[0]["always"] + reader[0]["sometimes"])
        self.assertEqual(reader[0]["via"], ["read grant"])
        self.assertEqual(authz.summarize(self.world.system, self.world.keys["bob"]), [])

    def test_every_operation_has_a_need(self):
        from z4node.s3.handlers import HANDLERS
        for operation in HANDLERS:
            need = authz.need_for(operation)
            self.assertTrue(need.action.startswith("s3:"), operation)
        self.assertEqual(set(OPERATIONS) | {"ListBuckets", "CreateBucket", "DeleteObjects",
                                            "PreflightCors"},
                         set(HANDLERS))
        self.assertEqual(authz.need_for("PreflightCors").grant, authz.ANYONE)

    def test_bare_grant_levels_in_the_table(self):
        saved = {name: authz._NEEDS.get(name) for name in
                 ("PutBucketCors", "OptionsPreflight", "ListObjectVersions")}
        authz._NEEDS["PutBucketCors"] = authz.OWNER
        authz._NEEDS["OptionsPreflight"] = authz.ANYONE
        authz._NEEDS["ListObjectVersions"] = authz.READ
        try:
            self.assertEqual(authz.need_for("PutBucketCors"),
                             authz.Need("s3:PutBucketCORS", authz.OWNER))
            self.assertEqual(authz.need_for("ListObjectVersions"),
                             authz.Need("s3:ListBucketVersions", authz.READ, "READ"))
            self.assertEqual(authz.need_for("PutObjectAcl", {"versionId": "v"}).action,
                             "s3:PutObjectVersionAcl")
            self.assertTrue(self.world.decide("anonymous", "OptionsPreflight").allowed)
            self.assertTrue(self.world.decide("owner", "PutBucketCors").allowed)
            self.assertFalse(self.world.decide("writer", "PutBucketCors").allowed)
        finally:
            # Put the table back as it was: the real entries stay.
            for operation, need in saved.items():
                if need is None:
                    del authz._NEEDS[operation]
                else:
                    authz._NEEDS[operation] = need


def authorize(api, call):
    """authorize() run to its end: its S3Error raised here."""
    from twisted.python.failure import Failure
    result = run(authz.authorize(api, call))
    if isinstance(result, Failure):
        result.raiseException()


class BlockPublicAccessTests(SynchronousTestCase):
    """The four flags, as AWS documents them, in the one decision."""

    def setUp(self):
        self.world = World()

    def block(self, **flags):
        self.world.set_settings(public_access_block={
            flag: flags.get(flag, False) for flag in authz.BLOCK_FLAGS})

    def test_ignore_public_acls_ignores_them_at_evaluation(self):
        owner = self.world.keys["owner"].user_id
        alice = self.world.keys["alice"].user_id
        self.world.set_settings(ownership=acls.WRITER, acl=acls.Acl(owner, (
            acls.Grant(acls.GROUP, acls.ALL_USERS, "READ"),
            acls.Grant(acls.USER, alice, "WRITE"))).to_json())
        public_object = acls.canned("public-read", owner, owner, False)
        authenticated = acls.canned("authenticated-read", owner, owner, False)
        self.assertTrue(self.world.decide("anonymous", "ListObjects", None, {}).allowed)
        self.assertTrue(self.world.decide("anonymous", "GetObject", "k", {},
                                          object_acl=public_object).allowed)
        self.block(IgnorePublicAcls=True)
        self.assertFalse(self.world.decide("anonymous", "ListObjects", None, {}).allowed)
        self.assertFalse(self.world.decide("anonymous", "GetObject", "k", {},
                                           object_acl=public_object).allowed)
        self.assertFalse(self.world.decide("bob", "GetObject", "k", {},
                                           object_acl=authenticated).allowed)
        # Grants to named users still count.
        self.assertTrue(self.world.decide("alice", "PutObject", "k", {}).allowed)
        self.assertFalse(authz.bucket_is_public(self.world.system.bucket("b")))
        # The other flags leave ACLs alone.
        self.block(BlockPublicAcls=True, BlockPublicPolicy=True, RestrictPublicBuckets=True)
        self.assertTrue(self.world.decide("anonymous", "ListObjects", None, {}).allowed)

    def test_restrict_public_buckets_keeps_a_public_policy_to_the_buckets_keys(self):
        self.world.set_settings(policy=json.dumps({"Version": "2012-10-17", "Statement": [
            {"Effect": "Allow", "Principal": "*", "Action": ["s3:GetObject", "s3:PutObject"],
             "Resource": "arn:aws:s3:::b/*"}]}))
        for who in ("anonymous", "alice", "reader"):
            self.assertTrue(self.world.decide(who, "PutObject", "k", {}).allowed, who)
        self.block(RestrictPublicBuckets=True)
        self.assertFalse(self.world.decide("anonymous", "GetObject", "k", {}).allowed)
        self.assertFalse(self.world.decide("alice", "GetObject", "k", {}).allowed)
        # The reader holds a grant on the bucket: the public policy still
        # gives it what its grant does not.
        self.assertTrue(self.world.decide("reader", "PutObject", "k", {}).allowed)
        self.assertFalse(authz.bucket_is_public(self.world.system.bucket("b")))

    def test_restrict_public_buckets_leaves_a_non_public_policy_alone(self):
        self.world.set_settings(policy=json.dumps({"Version": "2012-10-17", "Statement": [
            {"Effect": "Allow", "Principal": {"AWS": "arn:aws:iam:::user/alice"},
             "Action": "s3:GetObject", "Resource": "arn:aws:s3:::b/*"}]}))
        self.block(RestrictPublicBuckets=True)
        self.assertTrue(self.world.decide("alice", "GetObject", "k", {}).allowed)

    def test_block_public_acls_refuses_public_acl_headers_to_everyone(self):
        self.block(BlockPublicAcls=True)
        api = FakeApi(self.world)
        for headers in ({"x-amz-acl": "public-read"}, {"x-amz-acl": "authenticated-read"},
                        {"x-amz-grant-read": f'uri="{acls.ALL_USERS}"'},
                        {"x-amz-grant-write": f'uri="{acls.AUTHENTICATED_USERS}"'}):
            for operation in ("PutObject", "CopyObject", "CreateMultipartUpload",
                              "PutObjectAcl", "PutBucketAcl", "PostObject"):
                call = FakeCall(self.world.keys["admin"], operation, object_key="k",
                                headers=headers)
                with self.assertRaises(S3Error) as raised:
                    authorize(api, call)
                self.assertEqual(raised.exception.code, "AccessDenied")
                self.assertIn("BlockPublicAcls", raised.exception.message)
        for headers in ({}, {"x-amz-acl": "private"},
                        {"x-amz-acl": "bucket-owner-full-control"},
                        {"x-amz-grant-read": 'uri="http://acs.amazonaws.com/groups/s3/'
                                             'LogDelivery"'}):
            authorize(api, FakeCall(self.world.keys["admin"], "PutObject",
                                    object_key="k", headers=headers))
        # An ACL document is checked where the handler reads it.
        bucket = self.world.system.bucket("b")
        owner = bucket.owner
        with self.assertRaises(S3Error):
            authz.refuse_public_acl(bucket, acls.canned("public-read", owner, owner, True))
        authz.refuse_public_acl(bucket, acls.Acl.private(owner))

    def test_create_bucket_meets_the_node_default(self):
        api = FakeApi(self.world)
        call = FakeCall(self.world.keys["alice"], "CreateBucket", bucket="new",
                        headers={"x-amz-acl": "public-read"})
        authorize(api, call)
        api.objects.default_bucket_settings = {"public_access_block": {
            "BlockPublicAcls": True}}
        with self.assertRaises(S3Error):
            authorize(api, call)

    def test_block_public_policy(self):
        bucket = self.world.system.bucket("b")
        public = policies.parse(json.dumps({"Statement": [
            {"Effect": "Allow", "Principal": "*", "Action": "s3:GetObject",
             "Resource": "arn:aws:s3:::b/*"}]}), "b")
        authz.refuse_public_policy(bucket, public)
        self.block(BlockPublicPolicy=True)
        bucket = self.world.system.bucket("b")
        with self.assertRaises(S3Error) as raised:
            authz.refuse_public_policy(bucket, public)
        self.assertEqual(raised.exception.code, "AccessDenied")
        authz.refuse_public_policy(bucket, policies.parse(json.dumps({"Statement": [
            {"Effect": "Allow", "Principal": {"AWS": "arn:aws:iam:::user/alice"},
             "Action": "s3:GetObject", "Resource": "arn:aws:s3:::b/*"}]}), "b"))


class FakeRequest:
    def __init__(self, host="192.0.2.7", secure=False):
        self._host, self._secure = host, secure

    def getClientAddress(self):
        from twisted.internet.address import IPv4Address
        return IPv4Address("TCP", self._host, 50000)

    def isSecure(self):
        return self._secure


class FakeCall:
    def __init__(self, key, operation, bucket="b", object_key=None, headers=None,
                 query=None, credentials=None, request=None):
        self.access_key, self.operation = key, operation
        self.bucket, self.key = bucket, object_key
        self.headers, self.query = headers or {}, query or {}
        self.credentials, self.request = credentials, request or FakeRequest()
        self.access_context = None


class FakeObjects:
    default_bucket_settings = {}


class FakeApi:
    def __init__(self, world):
        self.system, self.clock = world.system, world.clock
        self.objects = FakeObjects()


class RequestContextTests(SynchronousTestCase):
    """What authorize() hands decide(): the condition keys of a request."""

    def test_the_keys_a_request_provides(self):
        from z4node.s3.auth import Credentials
        world = World()
        call = FakeCall(world.keys["alice"], "ListObjectsV2",
                        headers={"user-agent": "tests", "x-amz-acl": "private",
                                 "x-amz-server-side-encryption": "AES256",
                                 "x-amz-tagging": "team=blue&x=1", "if-none-match": "*",
                                 "x-amz-object-lock-mode": "GOVERNANCE"},
                        query={"prefix": "home/", "max-keys": "10", "list-type": "2"},
                        credentials=Credentials("id", 4, "UNSIGNED-PAYLOAD", True, None),
                        request=FakeRequest("192.0.2.7", secure=True))
        context = authz.request_context(FakeApi(world), call)
        self.assertEqual(context["aws:currenttime"], ["2024-06-01T12:00:00Z"])
        self.assertEqual(context["aws:epochtime"], ["1717243200"])
        self.assertEqual(context["aws:securetransport"], ["true"])
        self.assertEqual(context["aws:sourceip"], ["192.0.2.7"])
        self.assertEqual(context["aws:username"], ["alice"])
        self.assertEqual(context["aws:userid"], [world.keys["alice"].user_id])
        self.assertEqual(context["aws:principaltype"], ["User"])
        self.assertEqual(context["aws:useragent"], ["tests"])
        self.assertEqual(context["s3:prefix"], ["home/"])
        self.assertEqual(context["s3:max-keys"], ["10"])
        self.assertNotIn("s3:delimiter", context)
        self.assertEqual(context["s3:x-amz-acl"], ["private"])
        self.assertEqual(context["s3:x-amz-server-side-encryption"], ["AES256"])
        self.assertEqual(context["s3:requestobjecttag/team"], ["blue"])
        self.assertEqual(context["s3:requestobjecttagkeys"], ["team", "x"])
        self.assertEqual(context["s3:if-none-match"], ["*"])
        self.assertEqual(context["s3:object-lock-mode"], ["GOVERNANCE"])
        self.assertEqual(context["s3:signatureversion"], ["AWS4-HMAC-SHA256"])
        self.assertEqual(context["s3:authtype"], ["REST-QUERY-STRING"])
        anonymous = authz.request_context(FakeApi(world), FakeCall(None, "GetObject"))
        self.assertEqual(anonymous["aws:principaltype"], ["Anonymous"])
        self.assertNotIn("aws:username", anonymous)
        self.assertNotIn("s3:signatureversion", anonymous)

    def test_allows_answers_side_permissions_synchronously(self):
        world = World()
        world.set_settings(policy=json.dumps({"Version": "2012-10-17", "Statement": [
            {"Effect": "Allow", "Principal": {"AWS": "arn:aws:iam:::user/alice"},
             "Action": "s3:BypassGovernanceRetention", "Resource": "arn:aws:s3:::b/*",
             "Condition": {"IpAddress": {"aws:SourceIp": "192.0.2.0/24"}}}]}))
        authz._NEEDS["BypassGovernanceRetention"] = authz.OWNER
        try:
            api = FakeApi(world)
            call = FakeCall(world.keys["alice"], "PutObjectRetention", object_key="k")
            self.assertTrue(authz.allows(api, call, "BypassGovernanceRetention").allowed)
            call = FakeCall(world.keys["alice"], "PutObjectRetention", object_key="k",
                            request=FakeRequest("198.51.100.1"))
            self.assertFalse(authz.allows(api, call, "BypassGovernanceRetention").allowed)
            call = FakeCall(world.keys["owner"], "PutObjectRetention", object_key="k")
            self.assertTrue(authz.allows(api, call, "BypassGovernanceRetention").allowed)
            call = FakeCall(world.keys["writer"], "PutObjectRetention", object_key="k")
            self.assertFalse(authz.allows(api, call, "BypassGovernanceRetention").allowed)
        finally:
            del authz._NEEDS["BypassGovernanceRetention"]
