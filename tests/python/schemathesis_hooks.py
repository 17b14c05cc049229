"""Schemathesis hooks for test_openapi_contract.py (loaded with SCHEMATHESIS_HOOKS).

- `error_envelope`: every 4xx answer is the JSON error envelope the API documents,
  `{"error": {"code": "…", "message": "…"}}`, whatever raised it (a handler, a rejected
  path or query, an unknown route or method).
- `application/zip` (the evidence pack) is read as a ZIP archive whose every member
  passes its CRC check; it then stands as the `string` (binary) the document declares.
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
