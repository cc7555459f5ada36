"""Clip storage: S3, an S3-compatible store (R2, MinIO), or a presigned PUT URL given in the job.

Errors (every failure leaves this module as one of these, the third-party error chained as ``__cause__``)::

    StorageError            retryable: True for transient failures (5xx, throttling, connection errors,
    │                       timeouts) that persisted through every attempt, False for the rest (4xx)
    └── UploadNotAllowed    a presigned URL whose scheme or host is not allowed; never retryable
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Collection, Mapping
from dataclasses import dataclass
from typing import TypeVar
from urllib.parse import urlsplit

import aiohttp
import botocore.exceptions
import yarl
from botocore.config import Config

from chorus_orchestrator.retry import with_retries

logger = logging.getLogger(__name__)

T = TypeVar("T")

# Mirrors botocore's standard retry mode (botocore/retries/standard.py), which keeps its lists private.
_THROTTLING_CODES = frozenset({
    "Throttling", "ThrottlingException", "ThrottledException", "RequestThrottledException",
    "TooManyRequestsException", "ProvisionedThroughputExceededException", "TransactionInProgressException",
    "RequestLimitExceeded", "BandwidthLimitExceeded", "LimitExceededException", "RequestThrottled",
    "SlowDown", "EC2ThrottledException",
})
_TRANSIENT_CODES = frozenset({"RequestTimeout", "RequestTimeoutException", "PriorRequestNotComplete",
                              "InternalError", "ServiceUnavailable"})
_TRANSIENT_HTTP_STATUSES = frozenset({408, 429})
_NOT_FOUND = frozenset({"404", "NoSuchKey", "NotFound"})


class StorageError(Exception):
    """A clip could not be stored or looked up; ``retryable`` says whether the job should be tried again."""

    def __init__(self, message: str, *, retryable: bool) -> None:
        super().__init__(message)
        self.retryable = retryable


class UploadNotAllowed(StorageError):
    """The job's upload URL is not http(s) or its host is not on the allow-list: permanent."""

    def __init__(self, message: str) -> None:
        super().__init__(message, retryable=False)


class _HttpStatus(Exception):
    """A non-2xx answer to a presigned PUT; classified by ``_translate`` like every other failure."""

    def __init__(self, status: int, body: str) -> None:
        super().__init__(f"HTTP {status}: {body[:200]}")
        self.status = status


def s3_client_config(*, s3_compatible: bool) -> Config:
    """The ``config=`` for ``create_client("s3", ...)``.

    Always: standard retry mode (botocore's own retries, under ClipStore's) and SigV4. For S3-compatible
    stores also: checksums only where an operation requires them, because botocore >= 1.36 sends CRC32
    checksum headers/trailers by default, which R2 and older MinIO reject; and path-style addressing (MinIO
    has no wildcard DNS for bucket subdomains). botocore already uses path style for a custom endpoint_url;
    saying so here keeps a profile's ``addressing_style = virtual`` from turning it off.
    """
    options: dict[str, object] = {
        "retries": {"mode": "standard", "max_attempts": 3},
        "signature_version": "s3v4",
    }
    if s3_compatible:
        options.update(
            s3={"addressing_style": "path"},
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
        )
    return Config(**options)


def clip_key(prefix: str, document_id: str, section_index: int, ext: str) -> str:
    """Deterministic, so a redelivered job overwrites the same object."""
    return f"{prefix}{document_id}/{section_index:05d}.{ext}"


@dataclass(frozen=True)
class StoredClip:
    location: str  # "s3://bucket/key", or the presigned URL without its query string


def _error_code(exc: botocore.exceptions.ClientError) -> tuple[str, int]:
    response = exc.response
    code = response.get("Error", {}).get("Code", "")
    return code, response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)


def _translate(what: str, exc: BaseException) -> StorageError:
    """The single boundary where botocore/aiohttp failures become StorageError."""
    if isinstance(exc, botocore.exceptions.ClientError):
        code, status = _error_code(exc)
        retryable = code in _THROTTLING_CODES or code in _TRANSIENT_CODES or status >= 500
        return StorageError(f"{what}: {code} (HTTP {status})", retryable=retryable)
    if isinstance(exc, _HttpStatus):
        retryable = exc.status >= 500 or exc.status in _TRANSIENT_HTTP_STATUSES
        return StorageError(f"{what}: {exc}", retryable=retryable)
    transient = (botocore.exceptions.ConnectionError, botocore.exceptions.HTTPClientError,
                 aiohttp.ClientConnectionError, aiohttp.ClientPayloadError, TimeoutError)
    return StorageError(f"{what}: {type(exc).__name__}: {exc}", retryable=isinstance(exc, transient))


_TRANSLATED = (botocore.exceptions.ClientError, botocore.exceptions.BotoCoreError, aiohttp.ClientError,
               TimeoutError, _HttpStatus)


class ClipStore:
    """Stores clips in ``bucket`` or through presigned URLs on ``upload_hosts``; retries what is transient."""

    def __init__(self, s3_client, http: aiohttp.ClientSession, *, bucket: str | None,
                 upload_hosts: Collection[str] = (), max_attempts: int = 4, backoff_s: float = 0.2) -> None:
        if max_attempts < 1:
            raise ValueError(f"max_attempts must be >= 1, got {max_attempts}")
        self._s3 = s3_client
        self._http = http
        self._bucket = bucket
        self._upload_hosts = frozenset(host.lower() for host in upload_hosts)
        self._max_attempts = max_attempts
        self._backoff_s = backoff_s

    async def put(self, data: bytes, *, content_type: str, key: str | None = None,
                  upload_url: str | None = None, metadata: Mapping[str, str] | None = None) -> StoredClip:
        """Store one clip under ``key`` in the bucket, or PUT it to ``upload_url``; exactly one must be given.

        ``metadata`` becomes S3 user metadata for a bucket put; it is not sent to a presigned URL, whose
        signer decides which headers it accepts.
        """
        if (key is None) == (upload_url is None):
            raise ValueError("exactly one of key and upload_url must be given")
        if key is not None:
            if self._bucket is None:
                raise ValueError("this ClipStore has no bucket; only upload_url puts are possible")
            bucket = self._bucket
            await self._retrying(f"put s3://{bucket}/{key}", lambda: self._s3.put_object(
                Bucket=bucket, Key=key, Body=data, ContentType=content_type, Metadata=dict(metadata or {})))
            return StoredClip(f"s3://{bucket}/{key}")
        location = self._check_upload_url(upload_url)
        await self._retrying(f"put {location}", lambda: self._put_url(upload_url, data, content_type))
        return StoredClip(location)

    async def exists(self, key: str) -> bool:
        if self._bucket is None:
            raise ValueError("this ClipStore has no bucket")
        try:
            await self._retrying(f"head s3://{self._bucket}/{key}",
                                 lambda: self._s3.head_object(Bucket=self._bucket, Key=key))
        except StorageError as exc:
            # A HEAD answer has no body: the code is the bare status, and a missing bucket is "404" too.
            cause = exc.__cause__
            if isinstance(cause, botocore.exceptions.ClientError) and _error_code(cause)[0] in _NOT_FOUND:
                return False
            raise
        return True

    def _check_upload_url(self, url: str) -> str:
        """The URL without its query string (which holds the signature); or UploadNotAllowed."""
        try:
            parts = urlsplit(url)
            host = parts.hostname
        except ValueError as exc:
            raise UploadNotAllowed(f"malformed upload URL: {exc}") from exc
        if parts.scheme not in ("http", "https"):
            raise UploadNotAllowed(f"upload URL scheme {parts.scheme!r} not allowed; only http and https")
        if host is None or host not in self._upload_hosts:
            raise UploadNotAllowed(f"upload host {host!r} not allowed; allowed: {sorted(self._upload_hosts)}")
        return parts._replace(query="", fragment="").geturl()

    async def _put_url(self, url: str, data: bytes, content_type: str) -> None:
        # encoded=True: the signature in the query must reach the server byte for byte, not re-quoted by yarl.
        # No redirects: following one would send the clip to a host that was never checked.
        async with self._http.put(yarl.URL(url, encoded=True), data=data, allow_redirects=False,
                                  headers={"Content-Type": content_type}) as response:
            if not 200 <= response.status < 300:
                raise _HttpStatus(response.status, await response.text(errors="replace"))

    async def _retrying(self, what: str, attempt: Callable[[], Awaitable[T]]) -> T:
        return await with_retries(what, attempt, catch=_TRANSLATED, translate=_translate,
                                  max_attempts=self._max_attempts, backoff_s=self._backoff_s)


async def ensure_bucket(s3_client, bucket: str, region: str) -> None:
    """Create ``bucket`` if it is missing; keep it if this account already owns it."""
    params: dict[str, object] = {"Bucket": bucket}
    # us-east-1 rejects an explicit LocationConstraint; R2's pseudo-region "auto" is not a location.
    if region not in ("us-east-1", "auto"):
        params["CreateBucketConfiguration"] = {"LocationConstraint": region}
    try:
        await s3_client.create_bucket(**params)
    except botocore.exceptions.ClientError as exc:
        if _error_code(exc)[0] == "BucketAlreadyOwnedByYou":
            logger.info("bucket %s: exists, kept", bucket)
            return
        raise _translate(f"create bucket {bucket}", exc) from exc
    except botocore.exceptions.BotoCoreError as exc:
        raise _translate(f"create bucket {bucket}", exc) from exc
    logger.info("bucket %s: ready in %s", bucket, region)
