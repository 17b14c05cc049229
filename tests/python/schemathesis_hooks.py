"""Schemathesis hooks for test_openapi_contract.py (loaded with SCHEMATHESIS_HOOKS).

- `error_envelope`: every 4xx answer is the JSON error envelope the API documents,
  `{"error": {"code": "…", "message": "…"}}`, whatever raised it (a handler, a rejected
  path or query, an unknown route or method).
- `application/zip` (the evidence pack) is read as a ZIP archive whose every member
  passes its CRC check; it then stands as the `string` (binary) the document declares.
- `application/octet-stream` (a C2SP tlog-tiles tile or entry bundle) is read as one:
  whole 32-byte hashes, or entries each prefixed by their big-endian `u16` length, and
  stands as the `string` (binary) declared.
"""

from __future__ import annotations

import io
import zipfile

import schemathesis


@schemathesis.deserializer("application/zip")
def read_zip(ctx, response):
    with zipfile.ZipFile(io.BytesIO(response.content)) as archive:
        bad = archive.testzip()
        if bad is not None:
            raise ValueError(f"ZIP member {bad} fails its CRC check")
        return "\n".join(sorted(archive.namelist()))


@schemathesis.deserializer("application/octet-stream")
def read_tile(ctx, response):
    data = response.content
    if not data:
        raise ValueError("an empty tile (tlog-tiles: empty tiles must not be served)")
    if "/tile/entries/" in response.url:
        at = 0
        while at < len(data):
            if at + 2 > len(data):
                raise ValueError(f"a truncated entry length at byte {at}")
            at += 2 + int.from_bytes(data[at : at + 2], "big")
        if at != len(data):
            raise ValueError("the last entry runs past the end of the bundle")
    elif len(data) % 32 or len(data) > 256 * 32:
        raise ValueError(f"{len(data)} bytes is not 1 to 256 hashes of 32 bytes")
    return data.hex()


@schemathesis.check
def error_envelope(ctx, response, case):
    if not 400 <= response.status_code < 500:
        return None
    content_type = (response.headers.get("content-type") or [""])[0]
    assert content_type.startswith("application/json"), (
        f"{response.status_code} with Content-Type {content_type!r} instead of the JSON error "
        f"envelope: {response.content[:200]!r}"
    )
    body = response.json()
    error = body.get("error") if isinstance(body, dict) else None
    assert isinstance(error, dict), f"{response.status_code} without an `error` object: {body!r}"
    for member in ("code", "message"):
        assert isinstance(error.get(member), str) and error[member], (
            f"{response.status_code}: error.{member} is missing or empty: {body!r}"
        )
    return None
