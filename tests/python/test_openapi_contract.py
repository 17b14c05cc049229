"""The contract served is the contract kept: schemathesis against /openapi.json as served.

`schemathesis run` loads the document from the running server (not from a file) and
exercises every operation in it with a key of a fresh tenant that has a few events: its
coverage phase (boundary values and every kind of invalid input, derived from the
document) and fuzzing phase (positive and negative cases), bounded: 50 fuzzing cases per
operation, about 1,250 requests and 20 s on a small machine. The key has the read, write
and admin scopes, so the redaction is exercised past its 403; every redaction case names
the same seeded event, so the first valid one redacts it and the record reads back
redacted everywhere after (in both modes). Every answer must:

- not be a 5xx (`not_a_server_error`);
- have a status the document declares for the operation (`status_code_conformance`);
- have a declared content type (`content_type_conformance`) and match the declared
  schema and headers (`response_schema_conformance`, `response_headers_conformance`);
- if it is a 4xx, be the `{"error":{"code","message"}}` envelope (`error_envelope`, in
  schemathesis_hooks.py);
- if the request breaks the document (a negative case), be refused
  (`negative_data_rejection`): the server is at least as strict as what it declares.
  Except for a batch, where an invalid event is by design rejected by its index in a
  `200`/`202` answer while the others commit.

Schemathesis warnings that mean part of the document went untested (a `$ref` that
resolves nowhere, a pattern it cannot use, a media type it cannot read, only 401s, 429s)
fail the run too.

Why the CLI and not the pytest plugin: the document exists only once the session server
runs, which needs schemathesis' fixture-based loader, and that loader writes
`request.node._nodeid`, which pytest 9.2 no longer has (Function uses slots now).

The live stream (`GET /v1/events/stream`, SSE) never ends by itself. Schemathesis reads
an event stream until it has `max-stream-events` events or its request timeout passes,
then checks what it read, so the stream is tested too, with a short timeout and few
examples (each such case costs up to that timeout); `test_stream_is_declared_as_sse`
checks its declaration directly.

Generation is deterministic (the same cases every run, no example database), so a
failure reproduces. SEALTRAIL_CONTRACT_EXAMPLES raises the number of fuzzing cases per
operation to explore more; a failing run writes a pytest file reproducing each failure
next to its report (path in the assertion message).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import requests



HERE = Path(__file__).resolve().parent
MAX_EXAMPLES = int(os.environ.get("SEALTRAIL_CONTRACT_EXAMPLES", "50"))
CHECKS = [
    "not_a_server_error",
    "status_code_conformance",
    "content_type_conformance",
    "response_schema_conformance",
    "response_headers_conformance",
    "error_envelope",
    "negative_data_rejection",
]
FAIL_ON_WARNINGS = [
    "missing_auth",
    "missing_deserializer",
    "unresolvable_reference",
    "unsupported_regex",
    "rate_limited",
    "method_not_allowed",
]
STREAM_OPERATION = "streamEvents"
SEEDED_EVENTS = 6
# The one event every redaction case names (an id the document's generators would
# never find on their own: every other id is a 404).
REDACT_OPERATION = "redactEvent"
REDACT_TARGET = "contract-redact-target"
RUN_TIMEOUT_S = 600


def _event(i: int) -> dict:
    return {
        "actor": {"id": f"user-{i}", "type": "human"},
        "action": "document.update",
        "resource": {"id": f"doc-{i}", "type": "document"},
        "outcome": "success",
    }


def _toml(value) -> str:
    """A TOML value for the few kinds the config uses (JSON strings are TOML strings)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, list):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{json.dumps(k)} = {_toml(v)}" for k, v in value.items()) + " }"
    raise TypeError(value)


def _config(key: str, tenant: str) -> str:
    checks = {name: {"enabled": True} for name in CHECKS}
    lines = [
        f"headers = {_toml({'Authorization': f'Bearer {key}'})}",
        # The tiled API's prefix names the key's tenant (any other is a 404).
        f"parameters = {_toml({'path.tenant': tenant})}",
        "request-timeout = 20",
        # The debug server on a small machine is slow for Hypothesis' taste; no test
        # depends on generation speed.
        f"suppress-health-check = {_toml(['too_slow', 'filter_too_much', 'data_too_large'])}",
        "[generation]",
        'mode = "all"',
        f"max-examples = {MAX_EXAMPLES}",
        "deterministic = true",
        'database = "none"',
        # The key is in `headers`; generated Authorization values would only get 401.
        "with-security-parameters = false",
        "[warnings]",
        f"fail-on = {_toml(FAIL_ON_WARNINGS)}",
        "[phases]",
        f"stateful = {_toml({'enabled': False})}",
        "[checks]",
        "enabled = false",
        *(f"{name} = {_toml(value)}" for name, value in checks.items()),
        # A stream case ends at its request timeout (cut short, not a failure).
        "[[operations]]",
        f"include-operation-id = {_toml(STREAM_OPERATION)}",
        "request-timeout = 1.5",
        "max-stream-events = 3",
        f"generation = {_toml({'max-examples': 3})}",
        # Invalid events in a batch are rejected one by one inside a 2xx answer.
        "[[operations]]",
        'include-operation-id = "logBatch"',
        f"checks = {_toml({'negative_data_rejection': {'enabled': False}})}",
        "[[operations]]",
        f"include-operation-id = {_toml(REDACT_OPERATION)}",
        f"parameters = {_toml({'path.id': REDACT_TARGET})}",
    ]
    return "\n".join(lines) + "\n"


def test_every_operation_keeps_the_served_contract(server, tmp_path):
    tenant = f"t-contract-{uuid.uuid4().hex[:8]}"
    key = server.create_key(tenant, "admin,read,write")
    # A few records, so proofs, exports and lookups by sequence number have something
    # to answer besides 400; one of them is the redactions' target.
    events = [_event(i) for i in range(SEEDED_EVENTS)]
    events[2]["id"] = REDACT_TARGET
    r = requests.post(
        f"{server.base_url}/v1/events/batch?sync=true",
        json={"events": events},
        headers={"Authorization": f"Bearer {key}"},
        timeout=30,
    )
    assert r.status_code == 200, r.text

    config = tmp_path / "schemathesis.toml"
    config.write_text(_config(key, tenant))
    reports = tmp_path / "reports"
    env = dict(
        os.environ,
        SCHEMATHESIS_HOOKS="schemathesis_hooks",
        PYTHONPATH=os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")]),
    )
    cmd = [
        sys.executable, "-m", "schemathesis.cli", "--config-file", str(config), "--no-color",
        "run", f"{server.base_url}/openapi.json",
        "--report", "junit,pytest", "--report-dir", str(reports),
    ]
    started = time.monotonic()
    res = subprocess.run(
        cmd, capture_output=True, text=True, timeout=RUN_TIMEOUT_S, env=env, cwd=tmp_path
    )
    took = time.monotonic() - started
    output = res.stdout + res.stderr
    assert res.returncode == 0, (
        f"schemathesis found contract violations ({took:.0f} s; reproducers in {reports}):\n"
        + output[-20000:]
    )
    # Every operation of the document was tested, none skipped or erroring.
    doc = requests.get(f"{server.base_url}/openapi.json", timeout=10).json()
    operations = sum(len(item) for item in doc["paths"].values())
    assert f"{operations} passed" in output or f"{operations}/{operations}" in output, output[-5000:]


def test_stream_is_declared_as_sse(base_url):
    doc = requests.get(f"{base_url}/openapi.json", timeout=10).json()
    op = doc["paths"]["/v1/events/stream"]["get"]
    assert op["operationId"] == STREAM_OPERATION
    assert list(op["responses"]["200"]["content"]) == ["text/event-stream"]
    params = {(p["name"], p["in"]) for p in op["parameters"]}
    assert params == {("after", "query"), ("Last-Event-ID", "header")}
    for status in ("400", "401", "403", "429"):
        assert op["responses"][status]["content"]["application/json"]["schema"] == {
            "$ref": "#/components/schemas/ErrorBody"
        }


def test_bodies_are_declared(base_url):
    doc = requests.get(f"{base_url}/openapi.json", timeout=10).json()
    for path, name in (("/v1/events", "AuditEventInput"), ("/v1/events/batch", "BatchInput")):
        body = doc["paths"][path]["post"]["requestBody"]
        assert body["required"] is True
        assert body["content"]["application/json"]["schema"] == {"$ref": f"#/components/schemas/{name}"}
        schema = doc["components"]["schemas"][name]
        assert schema["type"] == "object" and schema["properties"], schema


def test_sync_record_with_proof_is_what_the_document_says(base_url, tenant):
    """`201` with `proof=true` has two members `Record` does not admit; the document
    declares it as `RecordWithProof` (it used to say `Record`)."""
    doc = requests.get(f"{base_url}/openapi.json", timeout=10).json()
    declared = doc["paths"]["/v1/events"]["post"]["responses"]["201"]["content"]["application/json"]["schema"]
    schema = doc["components"]["schemas"][declared["$ref"].rsplit("/", 1)[1]]
    for proof in ("true", "false"):
        r = requests.post(
            f"{base_url}/v1/events?sync=true&proof={proof}", json=_event(1), headers=tenant.headers(), timeout=30
        )
        assert r.status_code == 201, r.text
        assert set(r.json()) <= set(schema["properties"]), (proof, sorted(r.json()), sorted(schema["properties"]))
        assert set(schema["required"]) <= set(r.json())


def test_a_bad_flag_or_resume_point_is_refused_even_beside_a_good_one(base_url, tenant):
    """Found by schemathesis: `?sync=AAA` committed when `X-Fact0-Sync: true` was sent
    too, and `?after=-1` streamed when `Last-Event-ID` was sent too (the bad value was
    never read). One rule: a 400 for anything but what the document declares."""
    r = requests.post(
        f"{base_url}/v1/events?sync=AAA",
        json=_event(2),
        headers={**tenant.headers(), "X-Fact0-Sync": "true"},
        timeout=30,
    )
    assert (r.status_code, r.json()["error"]["code"]) == (400, "invalid_query"), r.text
    with requests.get(
        f"{base_url}/v1/events/stream?after=-1",
        headers={**tenant.headers(), "Last-Event-ID": "0"},
        stream=True,
        timeout=10,
    ) as r:
        assert (r.status_code, r.json()["error"]["code"]) == (400, "invalid_query"), r.text
    with requests.get(
        f"{base_url}/v1/events/stream?after=0",
        headers={**tenant.headers(), "Last-Event-ID": "x"},
        stream=True,
        timeout=10,
    ) as r:
        assert (r.status_code, r.json()["error"]["code"]) == (400, "invalid_header"), r.text
