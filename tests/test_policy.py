"""The bucket policy language: parsing and validation (MalformedPolicy with
the reason), globs, condition operators and statement evaluation."""

import json

from hypothesis import given, strategies as st
from twisted.trial.unittest import SynchronousTestCase

from z4node.s3 import policy
from z4node.s3.errors import S3Error

ALICE = policy.Principal("Z4ALICE00000000000AA", "a" * 64, "alice")
BOB = policy.Principal("Z4BOB0000000000000BB", "b" * 64, "bob")


def document(*statements, version="2012-10-17"):
    out = {"Statement": list(statements)}
    if version is not None:
        out["Version"] = version
    return json.dumps(out)


def statement(**fields):
    base = {"Effect": "Allow", "Principal": "*", "Action": "s3:GetObject",
            "Resource": "arn:aws:s3:::b/*"}
    base.update(fields)
    return {k: v for k, v in base.items() if v is not None}


class ParseTests(SynchronousTestCase):
    def malformed(self, text, reason, exists=None):
        with self.assertRaises(S3Error) as raised:
            policy.parse(text, "b", exists)
        self.assertEqual(raised.exception.code, "MalformedPolicy")
        self.assertEqual(raised.exception.status, 400)
        self.assertIn(reason, raised.exception.message)

    def test_a_simple_policy(self):
        parsed = policy.parse(document(statement(Sid="Public")), "b")
        self.assertEqual(parsed.version, "2012-10-17")
        self.assertEqual([s.sid for s in parsed.statements], ["Public"])
        self.assertTrue(parsed.is_public())

    def test_statement_may_be_one_object_and_version_may_be_absent(self):
        parsed = policy.parse(json.dumps({"Statement": statement()}), "b")
        self.assertEqual(parsed.version, "2008-10-17")
        self.assertEqual(len(parsed.statements), 1)

    def test_malformed_documents(self):
        cases = [
            ("", "first byte must be '{'"),
            ("[]", "first byte must be '{'"),
            ("{", "invalid Json"),
            ('{"Statement": [], "Version": "2012-10-17"}', "non-empty"),
            ('{"Version": "2012-10-17"}', "Missing required field Statement"),
            (document(statement(), version="2020-01-01"), "valid version"),
            (json.dumps({"Statement": [statement()], "Extra": 1}), "Unknown field Extra"),
            (json.dumps({"Statement": [statement()], "Id": 5}), "Id must be a string"),
            (json.dumps({"Statement": ["text"]}), "JSON object"),
            (document(statement(Effect=None)), "Missing required field Effect"),
            (document(statement(Effect="Permit")), "Invalid effect: Permit"),
            (document(statement(Principal=None)), "Missing required field Principal"),
            (document(statement(NotPrincipal="*")), "only one of Principal and NotPrincipal"),
            (document(statement(Action=None)), "Missing required field Action"),
            (document(statement(NotAction="s3:PutObject")), "only one of Action and NotAction"),
            (document(statement(Resource=None)), "Missing required field Resource"),
            (document(statement(NotResource="*")), "only one of Resource and NotResource"),
            (document(statement(Bogus=1)), "Unknown field Bogus"),
            (document(statement(Sid="x"), statement(Sid="x")), "must be unique"),
            (document(statement(Sid=3)), "Sid must be a string"),
            (document(statement(Action=[])), "non-empty list"),
            (document(statement(Action=5)), "Action must be"),
            (document(statement(Action="s3:GetObjekt")), "invalid action"),
            (document(statement(Action="iam:PassRole")), "invalid action"),
            (document(statement(Action="s3:")), "invalid action"),
            (document(statement(Action="s3:Nothing*")), "invalid action"),
            (document(statement(Resource="arn:aws:s3:::other/*")), "invalid resource"),
            (document(statement(Resource="arn:aws:s3:::")), "invalid resource"),
            (document(statement(Resource="b/*")), "invalid resource"),
            (document(statement(Resource="arn:aws:iam::1:user/x")), "invalid resource"),
            (document(statement(Action="s3:ListBucket", Resource="arn:aws:s3:::b/*")),
             "Action does not apply to any resource(s) in statement"),
            (document(statement(Action="s3:GetObject", Resource="arn:aws:s3:::b")),
             "Action does not apply to any resource(s) in statement"),
            (document(statement(Principal="alice")), "Invalid principal"),
            (document(statement(Principal={"Federated": "cognito-identity.amazonaws.com"})),
             "Invalid principal"),
            (document(statement(Principal={"AWS": "123456789012"})), "Invalid principal"),
            (document(statement(Principal={"AWS": "arn:aws:iam::1:role/x"})), "Invalid principal"),
            (document(statement(Principal={"CanonicalUser": "xyz"})), "Invalid principal"),
            (document(statement(Principal={})), "Invalid principal"),
            (document(statement(Condition=[])), "Condition must be a JSON object"),
            (document(statement(Condition={"StringEquality": {"aws:username": "a"}})),
             "Invalid Condition type : StringEquality"),
            (document(statement(Condition={"ForSomeValues:StringEquals": {"aws:username": "a"}})),
             "Invalid Condition type"),
            (document(statement(Condition={"NullIfExists": {"aws:username": "true"}})),
             "Invalid Condition type"),
            (document(statement(Condition={"StringEquals": {}})), "must map condition keys"),
            (document(statement(Condition={"StringEquals": {"s3:nonsense": "a"}})),
             "invalid condition key"),
            (document(statement(Condition={"StringEquals": {"ec2:Region": "a"}})),
             "invalid condition key"),
            (document(statement(Condition={"StringEquals": {"aws:username": []}})),
             "has no values"),
            (document(statement(Condition={"StringEquals": {"aws:username": {"a": 1}}})),
             "Invalid value"),
            (document(statement(Condition={"NumericLessThan": {"s3:max-keys": "ten"}})),
             "Invalid numeric value"),
            (document(statement(Condition={"DateLessThan": {"aws:CurrentTime": "soon"}})),
             "Invalid date value"),
            (document(statement(Condition={"Bool": {"aws:SecureTransport": "yes"}})),
             "Invalid boolean value"),
            (document(statement(Condition={"Null": {"aws:username": "maybe"}})),
             "Invalid boolean value"),
            (document(statement(Condition={"IpAddress": {"aws:SourceIp": "10.0.0.300/8"}})),
             "Invalid IP address"),
            (document(statement(Condition={"BinaryEquals": {"aws:username": "!!"}})),
             "Invalid base64"),
            ("{" + " " * policy.MAX_POLICY_BYTES + "}", "maximum allowed document size"),
        ]
        for text, reason in cases:
            with self.subTest(text=text[:200]):
                self.malformed(text, reason)
        self.malformed(b"\xff{", "invalid Json")
        self.malformed(b"{" + b" " * policy.MAX_POLICY_BYTES + b"}",
                       "maximum allowed document size")

    def test_accepted_forms(self):
        for fields in (
                {"Action": "*"}, {"Action": "s3:*"}, {"Action": "S3:getobject"},
                {"Action": ["s3:Get*", "s3:List*"], "Resource": ["arn:aws:s3:::b",
                                                                 "arn:aws:s3:::b/*"]},
                {"Action": "s3:ListBucket", "Resource": "arn:aws:s3:::b"},
                {"Action": "s3:ListBucket", "Resource": "arn:aws:s3:::b*"},
                {"Resource": "*"}, {"Resource": "arn:aws:s3:::*"},
                {"Resource": "arn:aws:s3:::b/${aws:username}/*"},
                {"Resource": "arn:aws:s3:::?/x"},
                {"Action": None, "NotAction": "s3:Get*"},
                {"Principal": {"AWS": "*"}}, {"Principal": {"AWS": ["*"]}},
                {"Principal": None, "NotPrincipal": {"AWS": ALICE.access_key_id}},
                {"Principal": {"AWS": ["arn:aws:iam::123456789012:user/alice", "b" * 64]}},
                {"Principal": {"CanonicalUser": "a" * 64}},
                {"Effect": "Deny"},
                {"Condition": {"StringLikeIfExists": {"s3:prefix": ["a/*", "b/*"]},
                               "ForAnyValue:StringEquals": {"s3:RequestObjectTagKeys": "x"},
                               "ForAllValues:StringLike": {"s3:RequestObjectTagKeys": "*"},
                               "NumericLessThanEquals": {"s3:max-keys": 10},
                               "Bool": {"aws:SecureTransport": False},
                               "Null": {"s3:x-amz-server-side-encryption": True},
                               "DateGreaterThan": {"aws:CurrentTime": "2020-01-01"},
                               "NotIpAddress": {"aws:SourceIp": ["10.0.0.0/8", "::1"]},
                               "StringEquals": {"s3:ExistingObjectTag/Team": "blue",
                                                "aws:CustomKey": "x"}}},
        ):
            with self.subTest(fields=fields):
                policy.parse(document(statement(**fields)), "b")

    def test_principals_must_exist_when_stored(self):
        known = {("access_key", ALICE.access_key_id), ("name", "alice"), ("user_id", "a" * 64)}

        def exists(spec):
            return (spec.kind, spec.value) in known
        for principal in (ALICE.access_key_id, "arn:aws:iam::z4node:user/alice", "a" * 64):
            policy.parse(document(statement(Principal={"AWS": principal})), "b", exists)
        for principal in (BOB.access_key_id, "arn:aws:iam:::user/bob", "b" * 64):
            self.malformed(document(statement(Principal={"AWS": principal})),
                           "Invalid principal in policy", exists)
        # A stored policy naming a key deleted since still parses.
        policy.parse(document(statement(Principal={"AWS": BOB.access_key_id})), "b")


class GlobTests(SynchronousTestCase):
    def test_matches(self):
        for pattern, text, expected in (
                ("*", "", True), ("*", "anything/at/all", True), ("a", "a", True),
                ("a", "A", False), ("a?c", "abc", True), ("a?c", "ac", False),
                ("a*c", "ac", True), ("a*c", "abbbc", True), ("a*c", "abbbd", False),
                ("*a*b*", "xxaxxbxx", True), ("*a*b*", "xxbxxaxx", False),
                ("x/*/y", "x//y", True), ("x/*/y", "x/y", False), ("??", "é!", True),
                ("a*b*a", "aba", True), ("a*b*a", "ab", False), ("a*a", "a", False)):
            with self.subTest(pattern=pattern, text=text):
                self.assertEqual(policy.Glob.of(pattern).match(text), expected)

    def test_ignore_case(self):
        self.assertTrue(policy.Glob.of("s3:get*", ignore_case=True).match("S3:GetObject"))

    def test_prefix_questions(self):
        glob = policy.Glob.of("arn:aws:s3:::b/photos/*")
        self.assertTrue(glob.may_match_after("arn:aws:s3:::b/"))
        self.assertFalse(glob.covers_all_after("arn:aws:s3:::b/"))
        self.assertFalse(policy.Glob.of("arn:aws:s3:::c/*").may_match_after("arn:aws:s3:::b/"))
        self.assertTrue(policy.Glob.of("arn:aws:s3:::b/*").covers_all_after("arn:aws:s3:::b/"))
        self.assertTrue(policy.Glob.of("arn:aws:s3:::*").covers_all_after("arn:aws:s3:::b/"))
        self.assertFalse(policy.Glob.of("arn:aws:s3:::b/*.jpg").covers_all_after(
            "arn:aws:s3:::b/"))

    def test_no_catastrophic_backtracking(self):
        glob = policy.Glob.of("*a" * 30 + "*b")
        self.assertFalse(glob.match("a" * 5000))

    @given(st.text(alphabet="ab*?", max_size=8), st.text(alphabet="ab", max_size=10))
    def test_agrees_with_fnmatch(self, pattern, text):
        import fnmatch
        expected = fnmatch.fnmatchcase(text, pattern)
        self.assertEqual(policy.Glob.of(pattern).match(text), expected)


def holds(operator, key, values, context, version="2012-10-17"):
    """Whether a one-condition Allow statement applies in ``context``."""
    parsed = policy.parse(document(statement(Condition={operator: {key: values}}),
                                   version=version), "b")
    query = policy.Query(ALICE, "s3:GetObject", "arn:aws:s3:::b/k", context)
    return policy.evaluate(parsed, query).allow is not None


class ConditionTests(SynchronousTestCase):
    """Each operator against present, absent and several values, by the
    rules of IAM's documentation."""

    def check(self, cases):
        for operator, key, values, context, expected in cases:
            with self.subTest(operator=operator, values=values, context=context):
                self.assertEqual(holds(operator, key, values, context), expected)

    def test_strings(self):
        name = "aws:username"
        self.check([
            ("StringEquals", name, "alice", {name: ["alice"]}, True),
            ("StringEquals", name, "alice", {name: ["Alice"]}, False),
            ("StringEquals", name, ["bob", "alice"], {name: ["alice"]}, True),
            ("StringEquals", name, "alice", {}, False),
            ("StringNotEquals", name, "alice", {name: ["bob"]}, True),
            ("StringNotEquals", name, ["bob", "alice"], {name: ["alice"]}, False),
            ("StringNotEquals", name, "alice", {}, True),
            ("StringEqualsIgnoreCase", name, "ALICE", {name: ["alice"]}, True),
            ("StringNotEqualsIgnoreCase", name, "ALICE", {name: ["alice"]}, False),
            ("StringLike", name, "al*", {name: ["alice"]}, True),
            ("StringLike", name, "al?", {name: ["alice"]}, False),
            ("StringLike", name, ["x*", "*ice"], {name: ["alice"]}, True),
            ("StringNotLike", name, "al*", {name: ["alice"]}, False),
            ("StringNotLike", name, "al*", {}, True),
            ("StringEqualsIfExists", name, "alice", {}, True),
            ("StringEqualsIfExists", name, "alice", {name: ["bob"]}, False),
            ("StringLikeIfExists", name, "b*", {name: ["bob"]}, True),
            # Condition key names are case-insensitive.
            ("StringEquals", "AWS:UserName", "alice", {name: ["alice"]}, True),
            # Policy variables, in 2012-10-17 policies.
            ("StringEquals", "s3:prefix", "home/${aws:username}/",
             {"s3:prefix": ["home/alice/"], name: ["alice"]}, True),
            ("StringLike", "s3:prefix", "home/${aws:username}/*",
             {"s3:prefix": ["home/bob/x"], name: ["alice"]}, False),
            ("StringEquals", "s3:prefix", "${aws:username}", {"s3:prefix": ["x"]}, False),
            ("StringEquals", "s3:prefix", "${aws:username, 'nobody'}",
             {"s3:prefix": ["nobody"]}, True),
            ("StringEquals", "s3:prefix", "a${*}b", {"s3:prefix": ["a*b"]}, True),
            ("StringLike", "s3:prefix", "a${*}b", {"s3:prefix": ["axb"]}, False),
            ("StringLike", "s3:prefix", "a${?}b", {"s3:prefix": ["a?b"]}, True),
        ])
        # 2008-10-17 policies substitute nothing.
        self.assertTrue(holds("StringEquals", "s3:prefix", "${aws:username}",
                              {"s3:prefix": ["${aws:username}"], name: ["alice"]},
                              version="2008-10-17"))

    def test_numbers(self):
        key = "s3:max-keys"
        self.check([
            ("NumericEquals", key, "10", {key: ["10"]}, True),
            ("NumericEquals", key, 10, {key: ["10.0"]}, True),
            ("NumericNotEquals", key, 10, {key: ["11"]}, True),
            ("NumericLessThan", key, 10, {key: ["9"]}, True),
            ("NumericLessThan", key, 10, {key: ["10"]}, False),
            ("NumericLessThanEquals", key, 10, {key: ["10"]}, True),
            ("NumericGreaterThan", key, 10, {key: ["11"]}, True),
            ("NumericGreaterThan", key, 10, {key: ["x"]}, False),
            ("NumericGreaterThanEquals", key, 10, {key: ["10"]}, True),
            ("NumericLessThan", key, 10, {}, False),
            ("NumericLessThanIfExists", key, 10, {}, True),
        ])

    def test_dates(self):
        key = "aws:CurrentTime"
        now = {"aws:currenttime": ["2024-06-01T12:00:00Z"]}
        self.check([
            ("DateLessThan", key, "2025-01-01T00:00:00Z", now, True),
            ("DateLessThan", key, "2024-01-01", now, False),
            ("DateGreaterThan", key, "2024-01-01", now, True),
            ("DateGreaterThanEquals", key, "2024-06-01T12:00:00Z", now, True),
            ("DateLessThanEquals", key, "2024-06-01T12:00:00+00:00", now, True),
            ("DateEquals", key, "2024-06-01T14:00:00+02:00", now, True),
            ("DateNotEquals", key, "2024-06-01T12:00:01Z", now, True),
            ("DateGreaterThan", key, "1717243199", now, True),
            ("DateGreaterThan", "aws:EpochTime", "2024-06-01",
             {"aws:epochtime": ["1717243200"]}, True),
            ("DateLessThan", key, "2025-01-01", {}, False),
        ])

    def test_bool_binary_null(self):
        self.check([
            ("Bool", "aws:SecureTransport", "true", {"aws:securetransport": ["true"]}, True),
            ("Bool", "aws:SecureTransport", True, {"aws:securetransport": ["false"]}, False),
            ("Bool", "aws:SecureTransport", "FALSE", {"aws:securetransport": ["false"]}, True),
            ("Bool", "aws:SecureTransport", "false", {}, False),
            ("BinaryEquals", "aws:username", "YWxpY2U=", {"aws:username": ["alice"]}, True),
            ("Null", "s3:x-amz-server-side-encryption", "true", {}, True),
            ("Null", "s3:x-amz-server-side-encryption", "true",
             {"s3:x-amz-server-side-encryption": ["AES256"]}, False),
            ("Null", "s3:x-amz-server-side-encryption", "false",
             {"s3:x-amz-server-side-encryption": ["AES256"]}, True),
            ("Null", "s3:x-amz-server-side-encryption", "false", {}, False),
        ])

    def test_addresses(self):
        key = "aws:SourceIp"
        self.check([
            ("IpAddress", key, "10.0.0.0/8", {"aws:sourceip": ["10.1.2.3"]}, True),
            ("IpAddress", key, "10.0.0.0/8", {"aws:sourceip": ["11.1.2.3"]}, False),
            ("IpAddress", key, "127.0.0.1", {"aws:sourceip": ["127.0.0.1"]}, True),
            ("IpAddress", key, ["192.168.0.0/16", "127.0.0.0/8"],
             {"aws:sourceip": ["127.0.0.1"]}, True),
            ("IpAddress", key, "2001:db8::/32", {"aws:sourceip": ["2001:db8::1"]}, True),
            ("IpAddress", key, "2001:db8::/32", {"aws:sourceip": ["10.0.0.1"]}, False),
            ("IpAddress", key, "10.0.0.0/8", {"aws:sourceip": ["::ffff:10.0.0.1"]}, True),
            ("IpAddress", key, "10.0.0.0/8", {"aws:sourceip": ["not an address"]}, False),
            ("NotIpAddress", key, "10.0.0.0/8", {"aws:sourceip": ["11.0.0.1"]}, True),
            ("NotIpAddress", key, "10.0.0.0/8", {"aws:sourceip": ["10.0.0.1"]}, False),
            ("IpAddress", key, "10.0.0.0/8", {}, False),
            ("NotIpAddress", key, "10.0.0.0/8", {}, True),
        ])

    def test_set_qualifiers(self):
        key = "s3:RequestObjectTagKeys"
        self.check([
            ("ForAnyValue:StringEquals", key, ["a", "b"], {key.lower(): ["c", "b"]}, True),
            ("ForAnyValue:StringEquals", key, ["a", "b"], {key.lower(): ["c"]}, False),
            ("ForAnyValue:StringEquals", key, ["a"], {}, False),
            ("ForAllValues:StringEquals", key, ["a", "b"], {key.lower(): ["a", "b"]}, True),
            ("ForAllValues:StringEquals", key, ["a", "b"], {key.lower(): ["a", "c"]}, False),
            ("ForAllValues:StringEquals", key, ["a"], {}, True),
            ("ForAllValues:StringLike", key, ["team*"], {key.lower(): ["team", "teams"]}, True),
            ("ForAnyValue:StringNotEquals", key, ["a"], {key.lower(): ["a", "b"]}, True),
            ("ForAllValues:StringNotEquals", key, ["a"], {key.lower(): ["a", "b"]}, False),
        ])

    def test_conditions_combine_with_and_within_and_across_operators(self):
        parsed = policy.parse(document(statement(Condition={
            "StringEquals": {"aws:username": "alice", "s3:prefix": "x"},
            "Bool": {"aws:SecureTransport": "true"}})), "b")

        def allowed(context):
            query = policy.Query(ALICE, "s3:GetObject", "arn:aws:s3:::b/k", context)
            return policy.evaluate(parsed, query).allow is not None
        full = {"aws:username": ["alice"], "s3:prefix": ["x"], "aws:securetransport": ["true"]}
        self.assertTrue(allowed(full))
        for missing in full:
            self.assertFalse(allowed({k: v for k, v in full.items() if k != missing}))


class EvaluationTests(SynchronousTestCase):
    def verdict(self, statements, principal=ALICE, action="s3:GetObject",
                resource="arn:aws:s3:::b/k", context=None, any_object=False,
                optimistic=False):
        parsed = policy.parse(document(*statements), "b")
        return policy.evaluate(parsed, policy.Query(
            principal, action, resource, {} if context is None else context, any_object),
            optimistic)

    def test_principals(self):
        for principal_field, who, expected in (
                ("*", None, True), ("*", ALICE, True), ({"AWS": "*"}, None, True),
                ({"AWS": ALICE.access_key_id}, ALICE, True),
                ({"AWS": ALICE.access_key_id}, BOB, False),
                ({"AWS": ALICE.access_key_id}, None, False),
                ({"AWS": ["arn:aws:iam::123456789012:user/alice"]}, ALICE, True),
                ({"AWS": ["arn:aws:iam:::user/path/to/alice"]}, ALICE, True),
                ({"AWS": ["arn:aws:iam:::user/alice"]}, BOB, False),
                ({"AWS": "a" * 64}, ALICE, True), ({"CanonicalUser": "a" * 64}, BOB, False)):
            with self.subTest(principal=principal_field, who=who):
                verdict = self.verdict([statement(Principal=principal_field)], principal=who)
                self.assertEqual(verdict.allow is not None, expected)

    def test_not_principal_not_action_not_resource(self):
        self.assertIsNone(self.verdict([statement(
            Principal=None, NotPrincipal={"AWS": ALICE.access_key_id})]).allow)
        self.assertIsNotNone(self.verdict([statement(
            Principal=None, NotPrincipal={"AWS": ALICE.access_key_id})], principal=BOB).allow)
        self.assertIsNotNone(self.verdict([statement(
            Principal=None, NotPrincipal={"AWS": ALICE.access_key_id})], principal=None).allow)
        self.assertIsNone(self.verdict([statement(Action=None, NotAction="s3:Get*")]).allow)
        self.assertIsNotNone(self.verdict([statement(Action=None, NotAction="s3:Get*")],
                                          action="s3:PutObject").allow)
        self.assertIsNone(self.verdict([statement(Resource=None,
                                                  NotResource="arn:aws:s3:::b/k")]).allow)
        self.assertIsNotNone(self.verdict([statement(Resource=None,
                                                     NotResource="arn:aws:s3:::b/k")],
                                          resource="arn:aws:s3:::b/j").allow)

    def test_deny_and_allow_are_both_reported(self):
        verdict = self.verdict([statement(Sid="A"), statement(Sid="D", Effect="Deny")])
        self.assertEqual((verdict.allow.sid, verdict.deny.sid), ("A", "D"))

    def test_resource_variables(self):
        home = statement(Resource="arn:aws:s3:::b/home/${aws:username}/*")
        self.assertIsNotNone(self.verdict([home], resource="arn:aws:s3:::b/home/alice/x",
                                          context={"aws:username": ["alice"]}).allow)
        self.assertIsNone(self.verdict([home], resource="arn:aws:s3:::b/home/bob/x",
                                       context={"aws:username": ["alice"]}).allow)
        self.assertIsNone(self.verdict([home], resource="arn:aws:s3:::b/home//x",
                                       principal=None, context={}).allow)

    def test_unknowns_lean_by_effect(self):
        some = [statement(Resource="arn:aws:s3:::b/public/*")]
        any_object = dict(resource="arn:aws:s3:::b/", any_object=True)
        self.assertIsNotNone(self.verdict(some, optimistic=True, **any_object).allow)
        self.assertIsNone(self.verdict(some, optimistic=False, **any_object).allow)
        every = [statement(Resource="arn:aws:s3:::b/*")]
        self.assertIsNotNone(self.verdict(every, optimistic=False, **any_object).allow)
        deny_some = [statement(Effect="Deny", Resource="arn:aws:s3:::b/secret/*")]
        self.assertIsNone(self.verdict(deny_some, optimistic=True, **any_object).deny)
        self.assertIsNotNone(self.verdict(deny_some, optimistic=False, **any_object).deny)
        conditional = [statement(Condition={"IpAddress": {"aws:SourceIp": "10.0.0.0/8"}})]
        parsed = policy.parse(document(*conditional), "b")
        unknown = policy.Query(ALICE, "s3:GetObject", "arn:aws:s3:::b/k", None)
        self.assertIsNotNone(policy.evaluate(parsed, unknown, optimistic=True).allow)
        self.assertIsNone(policy.evaluate(parsed, unknown, optimistic=False).allow)

    def test_policy_status(self):
        def public(**fields):
            return policy.parse(document(statement(**fields)), "b").is_public()
        self.assertTrue(public())
        self.assertTrue(public(Principal={"AWS": "*"}))
        self.assertFalse(public(Principal={"AWS": ALICE.access_key_id}))
        self.assertFalse(public(Effect="Deny"))
        self.assertTrue(public(Principal=None, NotPrincipal={"AWS": ALICE.access_key_id}))
        self.assertFalse(public(Condition={"IpAddress": {"aws:SourceIp": "10.0.0.0/8"}}))
        self.assertTrue(public(Condition={"IpAddress": {"aws:SourceIp": "0.0.0.0/0"}}))
        self.assertTrue(public(Condition={"NotIpAddress": {"aws:SourceIp": "10.0.0.0/8"}}))
        self.assertFalse(public(Condition={"StringEquals": {"aws:username": "alice"}}))
        self.assertTrue(public(Condition={"StringLike": {"aws:username": "*"}}))
        self.assertTrue(public(Condition={"Bool": {"aws:SecureTransport": "true"}}))

    def test_existing_object_tags_are_noticed(self):
        parsed = policy.parse(document(statement(Condition={
            "StringEquals": {"s3:ExistingObjectTag/Team": "blue"}})), "b")
        self.assertTrue(parsed.mentions_existing_object_tags)
        self.assertFalse(policy.parse(document(statement()), "b").mentions_existing_object_tags)


class DocumentationTests(SynchronousTestCase):
    def test_the_policies_in_the_docs_parse(self):
        import os
        import re
        path = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                            "docs", "security.md")
        with open(path) as f:
            text = f.read()
        blocks = re.findall(r"```json\n(.*?)```", text, re.S)
        blocks += re.findall(r"cat > policy.json <<'EOF'\n(.*?)EOF", text, re.S)
        self.assertGreaterEqual(len(blocks), 3)
        for block in blocks:
            resource = json.loads(block)["Statement"][0]["Resource"]
            resource = resource[0] if isinstance(resource, list) else resource
            bucket = resource[len(policy.ARN_PREFIX):].split("/")[0]
            policy.parse(block, bucket)
