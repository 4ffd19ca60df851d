"""Publish a local model folder to S3 as an immutable, verifiable version.

    python -m evals.publish --source DIR --dest s3://BUCKET/models/NAME/VERSION [--force]

How a version becomes visible, atomically: every weight file is uploaded first
(multipart, in parallel, each object tagged with its sha256 in user metadata), the
sizes are checked with HEAD, and only then is ``MANIFEST.json`` written, with
``If-None-Match: *`` so two concurrent publishers cannot both win. ``evals.stage``
reads nothing but what the manifest lists, so a version whose upload died half way
does not exist for it. Re-running an interrupted publish skips objects whose stored
sha256 and size already match (resumable). Publishing the same files again is a
no-op (exit 0); different files under an existing version are refused (exit 2)
unless ``--force``, which first deletes the old manifest (the version disappears
for new stagers, and running stagers fail verification instead of mixing files).

Prints one JSON object on stdout: dest, manifest_sha256, files, bytes, uploaded.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from evals import settings
from evals.errors import BadInput, CheckFailed
from evals.weights.manifest import MANIFEST_NAME, Manifest, ManifestEntry, build_manifest, model_files, sha256_bytes
from evals.weights.s3 import ModelLocation, error_code, http_status, parse_model_url, s3_client, translate

log = logging.getLogger("tollgate.publish")
SHA_META = "tollgate-sha256"  # x-amz-meta-tollgate-sha256 on every weight object
MiB = 1 << 20


@dataclass(frozen=True)
class PublishResult:
    dest: str
    manifest_sha256: str
    files: int
    bytes: int
    uploaded_files: int
    uploaded_bytes: int
    already_published: bool


def _get_manifest(client: Any, loc: ModelLocation) -> tuple[Manifest, bytes] | None:
    from botocore.exceptions import BotoCoreError, ClientError

    key = loc.key(MANIFEST_NAME)
    try:
        data = client.get_object(Bucket=loc.bucket, Key=key)["Body"].read()
    except ClientError as exc:
        if error_code(exc) in ("NoSuchKey", "404") or (http_status(exc) == 404 and error_code(exc) != "NoSuchBucket"):
            return None
        raise translate(exc, loc.url_of(MANIFEST_NAME)) from None
    except BotoCoreError as exc:
        raise translate(exc, loc.url_of(MANIFEST_NAME)) from None
    return Manifest.from_bytes(data, loc.url_of(MANIFEST_NAME)), data


def _stored_sha(client: Any, loc: ModelLocation, rel: str) -> tuple[int, str] | None:
    from botocore.exceptions import ClientError

    try:
        head = client.head_object(Bucket=loc.bucket, Key=loc.key(rel))
    except ClientError as exc:
        if http_status(exc) == 404:
            return None
        raise translate(exc, loc.url_of(rel)) from None
    return int(head["ContentLength"]), head.get("Metadata", {}).get(SHA_META, "")


def publish_model(source: Path, dest: str, *, force: bool = False, concurrency: int = 8,
                  client: Any = None) -> PublishResult:
    """Upload SOURCE's files, then the manifest; see the module docstring for the guarantees."""
    loc = parse_model_url(dest, "--dest")
    source = Path(source)
    if not source.is_dir():
        raise BadInput(f"--source {source}: not a folder")
    rels = model_files(source)
    before = {r: (source / r).stat() for r in rels}
    manifest = build_manifest(source, loc.name, loc.version, paths=rels)
    client = client or s3_client(max_pool_connections=concurrency * 2 + 4)

    existing = _get_manifest(client, loc)
    if existing is not None:
        old, old_bytes = existing
        if old.same_content(manifest):
            log.info("%s already holds these files; nothing to do", loc.url)
            return PublishResult(loc.url, sha256_bytes(old_bytes), len(old.files), old.total_size, 0, 0, True)
        _withdraw_old_version(client, loc, force)

    started = time.monotonic()
    done = _upload_all(client, loc, source, manifest, force=force, concurrency=concurrency)
    _check_before_manifest(client, loc, source, manifest, before)
    body = _write_manifest(client, loc, manifest)
    if force and existing is not None:
        _delete_strays(client, loc, {f.path for f in manifest.files})
    elapsed = max(time.monotonic() - started, 1e-9)
    log.info("published %s: %d files, %.1f MB uploaded in %.1f s (%.0f MB/s)", loc.url, done["files"],
             done["bytes"] / 1e6, elapsed, done["bytes"] / 1e6 / elapsed)
    return PublishResult(loc.url, sha256_bytes(body), len(manifest.files), manifest.total_size,
                         done["files"], done["bytes"], False)


def _withdraw_old_version(client: Any, loc: ModelLocation, force: bool) -> None:
    """Different files under an existing version: refused, or with --force its manifest goes first."""
    from botocore.exceptions import BotoCoreError, ClientError

    if not force:
        raise BadInput(f"--dest {loc.url} already holds a different version and versions are immutable; "
                       "publish a new VERSION or pass --force")
    log.warning("--force: replacing %s; deleting its manifest first so no stager mixes old and new files",
                loc.url)
    try:
        client.delete_object(Bucket=loc.bucket, Key=loc.key(MANIFEST_NAME))
    except (ClientError, BotoCoreError) as exc:
        raise translate(exc, loc.url_of(MANIFEST_NAME)) from None


def _upload_all(client: Any, loc: ModelLocation, source: Path, manifest: Manifest, *, force: bool,
                concurrency: int) -> dict[str, int]:
    """Upload every file S3 does not already hold; returns the files and bytes sent."""
    from boto3.s3.transfer import S3Transfer, TransferConfig

    # Parts of 64 MiB, several per file in flight: multipart with parallelism.
    part = settings.current().publish_part_mb * MiB  # S3 needs >= 5 MiB (checked by the setting)
    transfer = TransferConfig(multipart_threshold=part, multipart_chunksize=part,
                              max_concurrency=max(1, concurrency // 2), use_threads=True)
    uploader = S3Transfer(client, transfer)  # works with a plain botocore client
    lock = threading.Lock()
    done = {"files": 0, "bytes": 0}

    def upload(entry: ManifestEntry) -> None:
        if _upload_one(client, uploader, loc, source, entry, force):
            with lock:
                done["files"] += 1
                done["bytes"] += entry.size

    with ThreadPoolExecutor(max(1, min(4, concurrency))) as pool:
        list(pool.map(upload, manifest.files))
    return done


def _upload_one(client: Any, uploader: Any, loc: ModelLocation, source: Path, entry: ManifestEntry,
                force: bool) -> bool:
    """Upload one file tagged with its sha256, unless S3 holds it already; True when it was sent."""
    from boto3.exceptions import S3UploadFailedError
    from botocore.exceptions import BotoCoreError, ClientError

    stored = _stored_sha(client, loc, entry.path)
    if stored == (entry.size, entry.sha256):
        log.info("keep %s (already uploaded, sha256 matches)", entry.path)
        return False
    if stored is not None and stored[1] and not force:
        # Tagged by a publisher of other content: another run is writing this version.
        raise CheckFailed(f"{loc.url_of(entry.path)} holds different content from another publish of this "
                          "version; not overwritten (pass --force to replace it)")
    try:
        uploader.upload_file(str(source / entry.path), loc.bucket, loc.key(entry.path),
                             extra_args={"Metadata": {SHA_META: entry.sha256}})
    except (ClientError, BotoCoreError) as exc:
        raise translate(exc, loc.url_of(entry.path)) from None
    except S3UploadFailedError as exc:  # s3transfer wraps the ClientError
        cause = exc.__cause__ or exc.__context__
        if isinstance(cause, (ClientError, BotoCoreError)):
            raise translate(cause, loc.url_of(entry.path)) from None
        raise CheckFailed(f"upload of {entry.path} to {loc.url} failed: {exc}") from None
    after = _stored_sha(client, loc, entry.path)
    if after is None or after[0] != entry.size:
        raise CheckFailed(f"{loc.url_of(entry.path)}: stored size {after and after[0]} != {entry.size}")
    return True


def _check_before_manifest(client: Any, loc: ModelLocation, source: Path, manifest: Manifest,
                           before: dict[str, os.stat_result]) -> None:
    """The source did not change while uploading, and every object is still the one we wrote."""
    for rel, st in before.items():
        now = (source / rel).stat()
        if (now.st_size, now.st_mtime_ns) != (st.st_size, st.st_mtime_ns):
            raise CheckFailed(f"--source {source / rel} changed while publishing; nothing published")
    # Last look before the manifest makes the version visible: every object still ours.
    for entry in manifest.files:
        if _stored_sha(client, loc, entry.path) != (entry.size, entry.sha256):
            raise CheckFailed(f"{loc.url_of(entry.path)} was overwritten by another publish of this version; "
                              "manifest not written")


def _write_manifest(client: Any, loc: ModelLocation, manifest: Manifest) -> bytes:
    """Write MANIFEST.json only if absent (If-None-Match); returns the manifest bytes S3 now holds."""
    from botocore.exceptions import BotoCoreError, ClientError

    body = manifest.to_bytes()
    put = {"Bucket": loc.bucket, "Key": loc.key(MANIFEST_NAME), "Body": body, "ContentType": "application/json"}
    try:
        try:
            client.put_object(**put, IfNoneMatch="*")
        except ClientError as exc:
            if error_code(exc) != "NotImplemented" and http_status(exc) != 501:
                raise
            # A store without conditional writes: last writer wins, as before S3 had them.
            log.warning("the S3 store does not support If-None-Match; writing the manifest unconditionally")
            client.put_object(**put)
    except ClientError as exc:
        if error_code(exc) not in ("PreconditionFailed", "412") and http_status(exc) != 412:
            raise translate(exc, loc.url_of(MANIFEST_NAME)) from None
        theirs = _get_manifest(client, loc)  # a concurrent publisher won the race
        if theirs is None or not theirs[0].same_content(manifest):
            raise CheckFailed(f"{loc.url}: another publish of this version wrote a different manifest; "
                              "not replaced") from None
        body = theirs[1]
    except BotoCoreError as exc:
        raise translate(exc, loc.url_of(MANIFEST_NAME)) from None
    return body


def _delete_strays(client: Any, loc: ModelLocation, keep: set[str]) -> None:
    """After --force, objects of the old version that the new manifest does not list."""
    paginator = client.get_paginator("list_objects_v2")
    for page in paginator.paginate(Bucket=loc.bucket, Prefix=loc.prefix + "/"):
        for obj in page.get("Contents", []):
            rel = obj["Key"][len(loc.prefix) + 1:]
            if rel != MANIFEST_NAME and rel not in keep:
                client.delete_object(Bucket=loc.bucket, Key=obj["Key"])


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m evals.publish``: parse the flags, publish, print the result as JSON."""
    parser = argparse.ArgumentParser(prog="python -m evals.publish",
                                     description="Publish a model folder to S3 (weights, then MANIFEST.json).")
    parser.add_argument("--source", required=True, help="local model folder")
    parser.add_argument("--dest", required=True, help="s3://BUCKET/models/NAME/VERSION")
    parser.add_argument("--force", action="store_true", help="replace an existing version with different files")
    parser.add_argument("--concurrency", type=int, help="parallel uploads (default $TOLLGATE_PUBLISH_CONCURRENCY, 8)")
    args = parser.parse_args(argv)
    if args.concurrency is None:
        args.concurrency = settings.current().publish_concurrency
    if args.concurrency < 1:
        raise BadInput(f"--concurrency {args.concurrency} must be at least 1")
    result = publish_model(Path(args.source), args.dest, force=args.force, concurrency=args.concurrency)
    print(json.dumps(asdict(result)))
    return 0
