"""gRPC interop with a client nobody here wrote: Python `grpcio`, with stubs
generated from proto/ by `grpcio-tools` at test time.

Records fetched over gRPC are turned into the REST JSON shape by this file's own
code and hashed with the `rfc8785` package (never the server's code); they must
hash to their `hash` and equal the REST record. Health and reflection are called
with raw bytes, as a load balancer or `grpcurl` would, without our protos.
"""

from __future__ import annotations

import importlib
import json
import sys

import grpc
import pytest
import requests
from grpc_tools import protoc

from conftest import REPO_ROOT
from e2e_util import HTTP_TIMEOUT, auth, check_chain, jcs_hash, jloads

PROTO_ROOT = REPO_ROOT / "proto"
PROTO_FILE = PROTO_ROOT / "sealtrail" / "v1" / "audit_log.proto"


@pytest.fixture(scope="module")
def pb(tmp_path_factory):
    """Generates and imports the Python stubs; returns (messages, service stubs)."""
    out = tmp_path_factory.mktemp("grpc_stubs")
    rc = protoc.main(
        [
            "grpc_tools.protoc",
            f"-I{PROTO_ROOT}",
            f"--python_out={out}",
            f"--grpc_python_out={out}",
            str(PROTO_FILE),
        ]
    )
    assert rc == 0, "protoc failed to compile proto/sealtrail/v1/audit_log.proto"
    sys.path.insert(0, str(out))
    try:
        messages = importlib.import_module("sealtrail.v1.audit_log_pb2")
        services = importlib.import_module("sealtrail.v1.audit_log_pb2_grpc")
    finally:
        sys.path.remove(str(out))
    return messages, services


@pytest.fixture
def channel(server):
    with grpc.insecure_channel(server.grpc_addr) as ch:
        grpc.channel_ready_future(ch).result(timeout=15)
        yield ch


def md(key: str):
    return (("authorization", f"Bearer {key}"),)


def enum_json(enum_type, value: int) -> str | None:
    """ACTOR_TYPE_HUMAN -> "human"; unspecified -> None."""
    name = enum_type.Name(value)
    if name.endswith("_UNSPECIFIED"):
        return None
    return name.split("_")[-1].lower()


def record_json(m, rec) -> dict:
    """A gRPC Record as the REST record: absent optional members omitted."""
    actor = {"id": rec.actor.id}
    actor_type = enum_json(m.ActorType, rec.actor.type)
    if actor_type:
        actor["type"] = actor_type
    if rec.actor.HasField("email"):
        actor["email"] = rec.actor.email
    resource = {"id": rec.resource.id, "type": rec.resource.type}
    if rec.resource.HasField("name"):
        resource["name"] = rec.resource.name
    return {
        "id": rec.id,
        "tenant_id": rec.tenant_id,
        "sequence_number": rec.sequence_number,
        "timestamp": rec.timestamp,
        "created_at": rec.created_at,
        "actor": actor,
        "action": rec.action,
        "resource": resource,
        "outcome": enum_json(m.Outcome, rec.outcome),
        "metadata": jloads(rec.metadata_json) if rec.metadata_json else {},
        "prev_hash": rec.prev_hash,
        "hash": rec.hash,
    }


def event(m, i: int | None = None, **kw):
    fields = dict(
        actor=m.Actor(id="user_1", type=m.ACTOR_TYPE_HUMAN, email="u@example.com"),
        action="document.delete",
        resource=m.Resource(id=f"doc_{i or 0}", type="document", name="Plan"),
        outcome=m.OUTCOME_SUCCESS,
        metadata_json=json.dumps({"ip": "127.0.0.1", "n": i or 0}),
    )
    if i is not None:
        fields["id"] = f"py-{i}"
    fields.update(kw)
    return m.AuditEventInput(**fields)


METADATA = '{"big": 9007199254740991, "neg": -7, "f": 1.5, "tiny": 1e-7, "s": "é😀\\u0000", "nested": {"z": [true, null, 0.1], "a": {}}}'


def test_python_client_record_hashes_to_its_hash_and_equals_rest(pb, channel, server, new_tenant):
    m, s = pb
    tenant = new_tenant()
    stub = s.AuditLogStub(channel)
    resp = stub.LogEvent(
        m.LogEventRequest(event=event(m, 1, metadata_json=METADATA), sync=True),
        metadata=md(tenant.key),
        timeout=15,
    )
    assert resp.WhichOneof("result") == "record"
    got = stub.GetEvent(m.GetEventRequest(id="py-1"), metadata=md(tenant.key), timeout=15).record
    rec = record_json(m, got)
    assert rec["tenant_id"] == tenant.name
    assert jcs_hash(rec) == got.hash
    rest = requests.get(
        f"{server.base_url}/v1/events/py-1", headers=auth(tenant.key), timeout=HTTP_TIMEOUT
    )
    assert rest.status_code == 200
    assert jloads(rest.content) == rec
    assert rec["metadata"]["big"] == 9007199254740991


def test_python_ingest_stream_acks_in_order_and_every_record_verifies(pb, channel, new_tenant):
    m, s = pb
    tenant = new_tenant()
    stub = s.AuditLogStub(channel)

    def requests_iter():
        for i in range(1, 201):
            if i == 50:
                yield m.IngestRequest(event=event(m, i, action="Not An Action"))
            else:
                yield m.IngestRequest(event=event(m, i))

    records = []
    for expected, ack in enumerate(stub.Ingest(requests_iter(), metadata=md(tenant.key), timeout=60)):
        assert ack.index == expected
        if expected == 49:
            assert ack.WhichOneof("result") == "error"
            assert ack.error.code and not ack.error.retryable
            continue
        assert ack.WhichOneof("result") == "record", ack
        rec = record_json(m, ack.record)
        assert rec["id"] == f"py-{expected + 1}" == ack.id
        assert jcs_hash(rec) == ack.record.hash
        records.append(rec)
    assert len(records) == 199
    check_chain(records, tenant.name)

    # Tail from the start replays the same records.
    tail = stub.Tail(m.TailRequest(after_sequence_number=0), metadata=md(tenant.key), timeout=15)
    for want in records[:5]:
        assert record_json(m, next(tail).record) == want
    tail.cancel()


def test_python_errors_use_standard_codes(pb, channel, make_key, new_tenant):
    m, s = pb
    tenant = new_tenant()
    stub = s.AuditLogStub(channel)
    with pytest.raises(grpc.RpcError) as err:
        stub.GetEvent(m.GetEventRequest(id="x"), timeout=15)
    assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED

    read_only = make_key(tenant.name, "read")
    with pytest.raises(grpc.RpcError) as err:
        stub.LogEvent(m.LogEventRequest(event=event(m, 1)), metadata=md(read_only), timeout=15)
    assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED

    stub.LogEvent(m.LogEventRequest(event=event(m, 7), sync=True), metadata=md(tenant.key), timeout=15)
    with pytest.raises(grpc.RpcError) as err:
        stub.LogEvent(
            m.LogEventRequest(event=event(m, 7, action="other.action"), sync=True),
            metadata=md(tenant.key),
            timeout=15,
        )
    assert err.value.code() == grpc.StatusCode.ALREADY_EXISTS
    trailers = dict(err.value.trailing_metadata())
    assert trailers["sealtrail-error-code"] == "conflict"

    with pytest.raises(grpc.RpcError) as err:
        stub.LogEvent(
            m.LogEventRequest(event=event(m, 8, metadata_json='{"n": 9007199254740993}')),
            metadata=md(tenant.key),
            timeout=15,
        )
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert dict(err.value.trailing_metadata())["sealtrail-error-code"] == "number_out_of_range"

    other = new_tenant("other")
    with pytest.raises(grpc.RpcError) as err:
        stub.GetEvent(m.GetEventRequest(id="py-7"), metadata=md(other.key), timeout=15)
    assert err.value.code() == grpc.StatusCode.NOT_FOUND


def test_health_and_reflection_work_without_our_protos(channel):
    identity = lambda b: b  # noqa: E731
    check = channel.unary_unary(
        "/grpc.health.v1.Health/Check",
        request_serializer=identity,
        response_deserializer=identity,
    )
    # HealthCheckRequest{service}: field 1, string. Response {status = SERVING (1)}: 08 01.
    assert check(b"", timeout=15) == b"\x08\x01"
    service = b"sealtrail.v1.AuditLog"
    assert check(b"\x0a" + bytes([len(service)]) + service, timeout=15) == b"\x08\x01"

    reflect = channel.stream_stream(
        "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
        request_serializer=identity,
        response_deserializer=identity,
    )
    # ServerReflectionRequest{list_services = ""}: field 7, string.
    answers = list(reflect(iter([b"\x3a\x00"]), timeout=15))
    assert len(answers) == 1
    assert service in answers[0] and b"grpc.health.v1.Health" in answers[0]
