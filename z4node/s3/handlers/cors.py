"""CORS configuration: Put/Get/DeleteBucketCors, validated with S3's
errors, and the preflight ``OPTIONS`` answer. Matching is
``z4node.s3.cors``'s."""

from z4node.s3 import cors, xml
from z4node.s3.api import Response
from z4node.s3.errors import S3Error
from z4node.s3.handlers.documents import integer, only, read_document


def _texts(element, name):
    return [(child.text or "").strip() for child in element.findall(name)]


def _one_wildcard(values, what):
    for value in values:
        if value.count("*") > 1:
            raise S3Error("InvalidRequest",
                          f'{what} "{value}" can not have more than one wildcard.')


def parse_configuration(document):
    elements = document.findall("CORSRule")
    if not elements:
        raise S3Error("MalformedXML")
    if len(elements) > cors.MAX_RULES:
        raise S3Error("InvalidRequest", "The number of CORS rules should not exceed "
                      f"allowed limit of {cors.MAX_RULES} rules.")
    rules = []
    for element in elements:
        origins = _texts(element, "AllowedOrigin")
        methods = _texts(element, "AllowedMethod")
        if not origins or not methods:
            raise S3Error("MalformedXML")
        for method in methods:
            if method not in cors.METHODS:
                raise S3Error("InvalidRequest", "Found unsupported HTTP method in CORS "
                              f"config. Unsupported method is {method}")
        headers = _texts(element, "AllowedHeader")
        expose = _texts(element, "ExposeHeader")
        _one_wildcard(origins, "AllowedOrigin")
        _one_wildcard(headers, "AllowedHeader")
        for header in expose:
            if "*" in header:
                raise S3Error("InvalidRequest", f'ExposeHeader "{header}" contains '
                              "wildcard. We currently do not support wildcard for "
                              "ExposeHeader.")
        rule = {"allowed_origins": origins, "allowed_methods": methods,
                "allowed_headers": headers, "expose_headers": expose}
        rule_id = only(element, "ID")
        if rule_id is not None:
            if len(rule_id) > cors.MAX_ID_LENGTH:
                raise S3Error("InvalidRequest", "ID length should not exceed allowed "
                              "limit of 255")
            rule["id"] = rule_id
        max_age = only(element, "MaxAgeSeconds")
        if max_age is not None:
            rule["max_age"] = integer(max_age)
        rules.append(rule)
    return rules


async def put_bucket_cors(api, call):
    document = await read_document(api, call, "CORSConfiguration", require_digest=True)
    rules = parse_configuration(document)
    await api.objects.set_bucket_setting(call.bucket, "cors", rules)
    return Response()


async def get_bucket_cors(api, call):
    rules = api.objects.bucket(call.bucket).settings.get("cors")
    if not rules:
        raise S3Error("NoSuchCORSConfiguration", extra={"BucketName": call.bucket})
    children = []
    for rule in rules:
        inner = [("ID", rule.get("id"))]
        inner += [("AllowedHeader", h) for h in rule.get("allowed_headers", [])]
        inner += [("AllowedMethod", m) for m in rule["allowed_methods"]]
        inner += [("AllowedOrigin", o) for o in rule["allowed_origins"]]
        inner += [("ExposeHeader", h) for h in rule.get("expose_headers", [])]
        inner.append(("MaxAgeSeconds", rule.get("max_age")))
        children.append(("CORSRule", inner))
    return Response(headers={"content-type": "application/xml"},
                    body=xml.document("CORSConfiguration", children))


async def delete_bucket_cors(api, call):
    await api.objects.set_bucket_setting(call.bucket, "cors", None)
    return Response(204)


async def preflight(api, call):
    """OPTIONS from a browser: allowed by a CORS rule (200 with the
    Access-Control-* headers) or not (403); never authenticated."""
    return Response(headers=cors.preflight(api.system.bucket(call.bucket), call.headers))
