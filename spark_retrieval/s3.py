"""Small files on S3 (configs, reports, metrics) through boto3.

DataFrames and saved models never come through here: they go through Spark's own filesystem
(``s3://`` on EMR via EMRFS, ``s3a://`` elsewhere with ``hadoop-aws`` on the classpath).

boto3 finds everything in the usual AWS variables and files: credentials (``AWS_ACCESS_KEY_ID``,
``AWS_SECRET_ACCESS_KEY``, ``AWS_SESSION_TOKEN``, ``AWS_PROFILE``, instance roles), ``AWS_REGION`` /
``AWS_DEFAULT_REGION`` and ``AWS_ENDPOINT_URL`` / ``AWS_ENDPOINT_URL_S3`` (MinIO, moto, LocalStack).
Errors name the URI and the reason, never a credential.
"""

from __future__ import annotations

import os

from .errors import DataNotFoundError, UserError

SCHEMES = ("s3://", "s3a://", "s3n://")


class S3Error(UserError):
    """An S3 request that failed for a reason the user can fix (bucket, key, permissions, credentials)."""


def is_s3_uri(uri: str) -> bool:
    return uri.startswith(SCHEMES)


def split_uri(uri: str) -> tuple[str, str]:
    """``s3://bucket/a/b`` → ``("bucket", "a/b")``."""
    bucket, _, key = uri.split("://", 1)[1].partition("/")
    if not bucket:
        raise S3Error(f"{uri}: no bucket in S3 URI")
    return bucket, key


def client():
    import boto3

    return boto3.session.Session().client("s3")


def read_bytes(uri: str) -> bytes:
    bucket, key = split_uri(uri)
    with _explained(uri):
        return client().get_object(Bucket=bucket, Key=key)["Body"].read()


def write_bytes(uri: str, data: bytes) -> None:
    """One PUT: S3 objects appear whole or not at all."""
    bucket, key = split_uri(uri)
    with _explained(uri):
        client().put_object(Bucket=bucket, Key=key, Body=data)


def require_bucket(uri: str) -> None:
    """Fail early (before any work) when the bucket of ``uri`` is missing or not ours to use."""
    bucket, _ = split_uri(uri)
    with _explained(f"s3://{bucket}/"):
        client().head_bucket(Bucket=bucket)


def probe_prefix(uri: str) -> None:
    """Check ``uri`` the way a report is written there: its bucket exists, and an object can be put under the
    prefix and deleted again (a denied PUT or DELETE, a missing bucket, absent credentials: one ``S3Error``
    or ``DataNotFoundError`` naming the URI)."""
    import uuid

    require_bucket(uri)
    bucket, prefix = split_uri(uri.rstrip("/") + "/")
    key = f"{prefix}.spark-retrieval-probe-{uuid.uuid4().hex[:12]}"
    s3 = client()
    with _explained(f"s3://{bucket}/{prefix}"):
        s3.put_object(Bucket=bucket, Key=key, Body=b"")
        s3.delete_object(Bucket=bucket, Key=key)


def upload_directory(folder: str, uri: str) -> list[str]:
    """Upload every file under ``folder`` to the prefix ``uri``; returns the URIs written."""
    bucket, prefix = split_uri(uri.rstrip("/") + "/")
    s3 = client()
    written = []
    for root, _, files in os.walk(folder):
        for name in sorted(files):
            local = os.path.join(root, name)
            key = prefix + os.path.relpath(local, folder).replace(os.sep, "/")
            target = f"s3://{bucket}/{key}"
            with _explained(target):
                s3.upload_file(local, bucket, key)
            written.append(target)
    return written


class _explained:
    """Turn botocore's exceptions into one ``S3Error`` line (no chained traceback, no credentials)."""

    def __init__(self, uri: str):
        self.uri = uri

    def __enter__(self):
        return self

    def __exit__(self, kind, error, traceback):
        if error is None or isinstance(error, UserError):
            return False
        import botocore.exceptions as bx
        from boto3.exceptions import S3UploadFailedError

        if isinstance(error, bx.NoCredentialsError):
            raise S3Error(f"{self.uri}: no AWS credentials found (set AWS_PROFILE or AWS_ACCESS_KEY_ID)") from None
        if isinstance(error, bx.ClientError):
            raise _client_error(self.uri, error) from None
        if isinstance(error, S3UploadFailedError):
            raise S3Error(f"{self.uri}: upload failed: {_reason_of_upload_failure(str(error))}") from None
        if isinstance(error, (bx.EndpointConnectionError, bx.ConnectTimeoutError)):
            raise S3Error(f"{self.uri}: cannot reach the S3 endpoint ({type(error).__name__})") from None
        if isinstance(error, bx.BotoCoreError):
            raise S3Error(f"{self.uri}: {type(error).__name__}") from None
        return False


def _client_error(uri: str, error) -> UserError:
    code = str(error.response.get("Error", {}).get("Code", ""))
    bucket, key = split_uri(uri)
    if code == "NoSuchBucket":
        return DataNotFoundError(f"{uri}: bucket {bucket!r} does not exist")
    if code in ("NoSuchKey", "404", "NotFound"):
        if not key:  # HEAD on the bucket itself
            return DataNotFoundError(f"{uri}: bucket {bucket!r} does not exist")
        return DataNotFoundError(f"{uri}: no such object")
    if code in ("AccessDenied", "403", "Forbidden", "InvalidAccessKeyId", "SignatureDoesNotMatch"):
        return S3Error(f"{uri}: access denied ({code}); check the credentials and the bucket policy")
    return S3Error(f"{uri}: S3 request failed ({code or 'unknown error'})")


def _reason_of_upload_failure(message: str) -> str:
    # boto3's message ends with "An error occurred (Code) when calling …: text"; keep only the code.
    start, end = message.find("("), message.find(")")
    code = message[start + 1 : end] if 0 <= start < end else "unknown error"
    if code == "NoSuchBucket":
        return "bucket does not exist"
    if code in ("AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch"):
        return f"access denied ({code})"
    return code
