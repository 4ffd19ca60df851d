"""The S3 adapter: client construction, model URLs, and what S3 errors mean to a caller.

Configuration follows the AWS conventions boto3 already honours: the endpoint from
``AWS_ENDPOINT_URL_S3`` or ``AWS_ENDPOINT_URL``, credentials from the usual chain
(env, profile, web identity in a pod, instance metadata). We only add a default
region for S3-compatible endpoints, a retry policy and timeouts. Nothing here ever
logs or formats a secret.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from evals import settings
from evals.contract import STORAGE_NAME
from evals.errors import BadInput, CheckFailed

if TYPE_CHECKING:  # boto3 is imported lazily: `--help` and bad flags answer in milliseconds
    from botocore.client import BaseClient

_CREDENTIAL_CODES = {"InvalidAccessKeyId", "SignatureDoesNotMatch", "InvalidToken", "ExpiredToken",
                     "InvalidClientTokenId", "AuthorizationHeaderMalformed"}
_MISSING_CODES = {"NoSuchKey", "404", "NotFound", "NoSuchBucket", "NoSuchVersion"}


@dataclass(frozen=True)
class S3Timeouts:
    """How long to wait before botocore and our part retries call a connection dead."""

    connect_s: float = 10.0
    read_s: float = 60.0  # a stalled GET fails after this long without a byte
    max_attempts: int = 5  # botocore's, per request; AWS_MAX_ATTEMPTS overrides

    @classmethod
    def from_env(cls) -> S3Timeouts:
        env = settings.current()
        raw = os.environ.get("AWS_MAX_ATTEMPTS", "")  # botocore's own variable, read the way botocore reads it
        return cls(
            connect_s=env.s3_connect_timeout_s,
            read_s=env.s3_read_timeout_s,
            max_attempts=settings.positive_int("AWS_MAX_ATTEMPTS", raw) if raw else cls.max_attempts,
        )


@dataclass(frozen=True)
class ModelLocation:
    """s3://BUCKET/PREFIX/NAME/VERSION, split."""

    bucket: str
    prefix: str  # the version's key prefix, no trailing slash: models/NAME/VERSION
    name: str
    version: str

    @property
    def url(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}"

    def key(self, rel: str) -> str:
        return f"{self.prefix}/{rel}"

    def url_of(self, rel: str) -> str:
        return f"s3://{self.bucket}/{self.key(rel)}"


def parse_model_url(url: str, flag: str) -> ModelLocation:
    """Parse s3://bucket/.../NAME/VERSION; NAME and VERSION become folder names on the volume."""
    if not isinstance(url, str) or not url.startswith("s3://"):
        raise BadInput(f"{flag} {url!r} is not an s3://bucket/models/NAME/VERSION URL")
    bucket, _, prefix = url[5:].partition("/")
    prefix = prefix.strip("/")
    parts = prefix.split("/") if prefix else []
    if not bucket or len(parts) < 2 or any(p in ("", ".", "..") for p in parts):
        raise BadInput(f"{flag} {url!r} is not an s3://bucket/models/NAME/VERSION URL")
    name, version = parts[-2], parts[-1]
    for what, value in (("NAME", name), ("VERSION", version)):
        if not STORAGE_NAME.fullmatch(value):
            raise BadInput(f"{flag} {url!r}: {what} {value!r} must match {STORAGE_NAME.pattern}")
    return ModelLocation(bucket=bucket, prefix=prefix, name=name, version=version)


def endpoint_url() -> str | None:
    return os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL") or None


def s3_client(*, max_pool_connections: int = 16, timeouts: S3Timeouts | None = None) -> BaseClient:
    """A thread-safe S3 client from the environment, with standard-mode retries and backoff."""
    # botocore alone: boto3's import pulls in s3transfer, ~0.3 s of start-up that an
    # unchanged re-stage would spend for nothing. The credential chain is botocore's.
    import botocore.session
    from botocore.config import Config

    t = timeouts or S3Timeouts.from_env()
    region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
    config = Config(
        retries={"mode": os.environ.get("AWS_RETRY_MODE", "standard"), "max_attempts": t.max_attempts},
        connect_timeout=t.connect_s,
        read_timeout=t.read_s,
        max_pool_connections=max_pool_connections,
        # Path-style works with every S3-compatible server and with AWS.
        s3={"addressing_style": settings.current().s3_addressing_style},
        # Newer botocore adds CRC checksums that some S3-compatible servers reject;
        # we verify sha256 end to end ourselves.
        request_checksum_calculation="when_required",
        response_checksum_validation="when_required",
    )
    session = botocore.session.get_session()
    if region is None and session.get_config_variable("region") is None:
        region = "us-east-1"  # S3-compatible servers ignore it; SigV4 needs one
    return session.create_client("s3", endpoint_url=endpoint_url(), region_name=region, config=config)


def error_code(exc: BaseException) -> str:
    response: Any = getattr(exc, "response", None) or {}
    return str(response.get("Error", {}).get("Code", ""))


def http_status(exc: BaseException) -> int:
    response: Any = getattr(exc, "response", None) or {}
    return int(response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)


def translate(exc: BaseException, what: str) -> Exception:
    """Map a botocore failure to the project's errors: who is at fault, in one line.

    Missing objects and refused credentials are bad input (exit 2); the store being
    unavailable after retries is a failed check (exit 1). Messages name the object
    and never include a key or secret.
    """
    from botocore.exceptions import (
        ClientError,
        EndpointConnectionError,
        NoCredentialsError,
        PartialCredentialsError,
    )

    if isinstance(exc, (NoCredentialsError, PartialCredentialsError)):
        return BadInput(f"no usable S3 credentials for {what} (set AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY "
                        "or a profile)")
    if isinstance(exc, EndpointConnectionError):
        return CheckFailed(f"cannot reach the S3 endpoint for {what} ({endpoint_url() or 'AWS default'})")
    if isinstance(exc, ClientError):
        code, status = error_code(exc), http_status(exc)
        if code in _CREDENTIAL_CODES or (status == 403 and code in ("403", "Forbidden", "")):
            return BadInput(f"S3 rejected the credentials for {what} ({code or status}); "
                            "check AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY")
        if code == "AccessDenied":
            return BadInput(f"access denied to {what}: the credentials lack permission")
        if code == "NoSuchBucket":
            return BadInput(f"{what}: bucket does not exist")
        if code in _MISSING_CODES or status == 404:
            return BadInput(f"{what}: no such object")
        return CheckFailed(f"S3 error on {what}: {code or status} after retries")
    return CheckFailed(f"S3 request for {what} failed: {type(exc).__name__}: {exc}")
