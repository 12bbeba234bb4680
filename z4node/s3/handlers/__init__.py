"""S3 operation handlers, one module per family; :data:`HANDLERS` maps each
operation the router can name to its coroutine ``handler(api, call)``."""

from z4node.s3.handlers import buckets, listing, multipart, objects

HANDLERS = {
    "ListBuckets": buckets.list_buckets,
    "CreateBucket": buckets.create_bucket,
    "DeleteBucket": buckets.delete_bucket,
    "HeadBucket": buckets.head_bucket,
    "GetBucketLocation": buckets.get_bucket_location,
    "GetBucketVersioning": buckets.get_bucket_versioning,
    "ListObjects": listing.list_objects_v1,
    "ListObjectsV2": listing.list_objects_v2,
    "GetObject": objects.get_object,
    "HeadObject": objects.get_object,
    "GetObjectAttributes": objects.get_object_attributes,
    "PutObject": objects.put_object,
    "CopyObject": objects.copy_object,
    "DeleteObject": objects.delete_object,
    "DeleteObjects": objects.delete_objects,
    "CreateMultipartUpload": multipart.create_upload,
    "UploadPart": multipart.upload_part,
    "UploadPartCopy": multipart.upload_part_copy,
    "CompleteMultipartUpload": multipart.complete_upload,
    "AbortMultipartUpload": multipart.abort_upload,
    "ListParts": multipart.list_parts,
    "ListMultipartUploads": multipart.list_uploads,
}
