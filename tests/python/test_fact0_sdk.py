"""The official, unmodified fact0 Python SDK (fact0-sdk) against sealtrail.

Only the SDK's public API is used: fact0.Client(api_key=..., base_url=...,
sync=..., raise_on_error=..., batch_max_size=..., batch_max_wait_ms=...) and
client.audit.{log, flush, log_batch, get_receipt, get_event, list_events,
verify, verify_event, stream_events}.
"""

from __future__ import annotations

import queue
import threading
import time
from datetime import datetime, timedelta, timezone

import fact0
import pytest
import requests

from e2e_util import (
    HTTP_TIMEOUT,
    UUID7_RE,
    BackgroundIter,
    auth,
    check_chain,
    check_error,
    check_record_shape,
    jcs_hash,
)


@pytest.fixture
def thread_errors(monkeypatch):
    """Collect exceptions raised in the SDK's background flush thread."""
    errors: list[BaseException] = []
    orig = threading.excepthook

    def hook(args):
        errors.append(args.exc_value)
        orig(args)

    monkeypatch.setattr(threading, "excepthook", hook)
    return errors


def sdk(base_url: str, key: str, **kw) -> fact0.Client:
    kw.setdefault("raise_on_error", True)
    return fact0.Client(api_key=key, base_url=base_url, **kw)


def ev(i: int, **over) -> dict:
    e = {
        "id": f"evt-{i:05d}",
        "actor": {"id": f"user-{i % 3}", "type": "human"},
        "action": "document.read",
        "resource": {"id": f"doc-{i}", "type": "document"},
        "outcome": "success",
        "metadata": {"i": i},
    }
    e.update(over)
    return e


def all_events(client: fact0.Client) -> dict:
    return client.audit.list_events(page=1, page_size=1000)


# --------------------------------------------------------------------------- log / flush


def test_log_many_then_flush(base_url, tenant, thread_errors):
    n = 150
    client = sdk(base_url, tenant.key, batch_max_size=40, batch_max_wait_ms=100)
    ids = []
    try:
        for i in range(n):
            eid = f"log-{i:04d}"
            ids.append(eid)
            client.audit.log(
                actor={"id": f"user-{i % 5}", "type": "human", "email": f"u{i % 5}@example.com"},
                action="document.read",
                resource={"id": f"doc-{i}", "type": "document", "name": f"Doc {i}"},
                outcome="success",
                metadata={"i": i},
                event_id=eid,
            )
        client.audit.flush()
    finally:
        # close() joins the background flusher, so batches it already took are settled
        client.close()
    assert not thread_errors, f"SDK background flush raised: {thread_errors!r}"

    body = all_events(client)
    assert body["total"] == n, f"total {body['total']} != {n}"
    events = body["events"]
    assert len(events) == n
    assert [e["sequence_number"] for e in events] == list(range(1, n + 1)), "list not in gapless sequence order"
    assert sorted(e["id"] for e in events) == sorted(ids)
    for e in events:
        i = int(e["id"].split("-")[1])
        assert e["metadata"] == {"i": i}
        assert e["actor"] == {"id": f"user-{i % 5}", "type": "human", "email": f"u{i % 5}@example.com"}
        assert e["resource"] == {"id": f"doc-{i}", "type": "document", "name": f"Doc {i}"}
    check_chain(events, tenant.name)


# --------------------------------------------------------------------------- log_batch (async)


def test_log_batch_async_receipt(base_url, tenant):
    client = sdk(base_url, tenant.key)
    try:
        events = [ev(i) for i in range(4)]
        no_id = ev(4)
        del no_id["id"]
        events.append(no_id)
        res = client.audit.log_batch(events)
        assert isinstance(res.get("receipt_id"), str) and res["receipt_id"], res
        assert res.get("status") in ("queued", "committed"), res
        assert res.get("accepted") == 5 and res.get("rejected") == 0, res
        assert res.get("errors") in ([], None), res
        ids = res.get("ids")
        assert isinstance(ids, list) and len(ids) == 5, res
        assert ids[:4] == [f"evt-{i:05d}" for i in range(4)], ids
        assert UUID7_RE.match(ids[4]), f"server-generated id is not a UUIDv7: {ids[4]!r}"

        # the SDK polled the receipt until settled; it must be committed now
        receipt = client.audit.get_receipt(res["receipt_id"])
        assert receipt["status"] == "committed", receipt
        assert receipt["receipt_id"] == res["receipt_id"]
        assert receipt.get("accepted") == 5, receipt

        for seq, eid in enumerate(ids, start=1):
            rec = client.audit.get_event(event_id=eid)
            check_record_shape(rec, tenant.name)
            assert rec["id"] == eid
            assert rec["sequence_number"] == seq, f"{eid}: seq {rec['sequence_number']} != {seq} (batch order)"
            assert rec["metadata"] == {"i": seq - 1}
            assert rec["actor"] == {"id": f"user-{(seq - 1) % 3}", "type": "human"}
            assert rec["resource"] == {"id": f"doc-{seq - 1}", "type": "document"}
            assert rec["action"] == "document.read" and rec["outcome"] == "success"
    finally:
        client.close()


# --------------------------------------------------------------------------- get_event


def test_get_event(base_url, tenant, new_tenant):
    client = sdk(base_url, tenant.key, sync=True)
    try:
        ts = datetime(2024, 5, 6, 7, 8, 9, 123000, tzinfo=timezone.utc)
        client.audit.log_batch(
            [
                ev(0),
                ev(
                    1,
                    id="known-1",
                    actor={"id": "svc-billing", "type": "system"},
                    action="invoice.void",
                    resource={"id": "inv-9", "type": "invoice", "name": "Invoice 9"},
                    outcome="failure",
                    metadata={"reason": "duplicate", "amount": 12.5, "tags": ["a", "b"]},
                    timestamp=ts.isoformat(),
                ),
            ]
        )
        rec = client.audit.get_event(event_id="known-1")
        check_record_shape(rec, tenant.name)
        assert rec["id"] == "known-1"
        assert rec["sequence_number"] == 2
        assert rec["actor"] == {"id": "svc-billing", "type": "system"}
        assert rec["action"] == "invoice.void"
        assert rec["resource"] == {"id": "inv-9", "type": "invoice", "name": "Invoice 9"}
        assert rec["outcome"] == "failure"
        assert rec["metadata"] == {"reason": "duplicate", "amount": 12.5, "tags": ["a", "b"]}
        assert rec["timestamp"] == "2024-05-06T07:08:09.123000Z"
        first = client.audit.get_event(event_id="evt-00000")
        assert rec["prev_hash"] == first["hash"]
        assert jcs_hash(rec) == rec["hash"]

        with pytest.raises(fact0.TransportError) as ei:
            client.audit.get_event(event_id="no-such-event")
        assert ei.value.status_code == 404, str(ei.value)

        # another tenant's key must not see it: 404, never 403
        other = new_tenant("other")
        oc = sdk(base_url, other.key)
        try:
            with pytest.raises(fact0.TransportError) as ei:
                oc.audit.get_event(event_id="known-1")
            assert ei.value.status_code == 404, str(ei.value)
            with pytest.raises(fact0.TransportError) as ei:
                oc.audit.verify_event(event_id="known-1")
            assert ei.value.status_code == 404, str(ei.value)
            assert oc.audit.list_events()["total"] == 0
        finally:
            oc.close()
    finally:
        client.close()


# --------------------------------------------------------------------------- list_events filters


T0 = datetime(2024, 1, 1, tzinfo=timezone.utc)


def seed_filter_set(client) -> list[dict]:
    actors = [("alice", "human"), ("bob", "human"), ("robot", "agent"), ("cron", "system")]
    actions = ["doc.read", "doc.delete", "user.login"]
    outcomes = ["success", "failure", "error"]
    events = []
    for i in range(12):
        aid, atype = actors[i % 4]
        events.append(
            {
                "id": f"f-{i:02d}",
                "actor": {"id": aid, "type": atype},
                "action": actions[i % 3],
                "resource": {"id": f"r-{i % 5}", "type": "doc"},
                "outcome": outcomes[(i // 2) % 3],
                "metadata": {"i": i},
                "timestamp": (T0 + timedelta(seconds=10 * i)).isoformat(),
            }
        )
    res = client.audit.log_batch(events)
    assert res.get("accepted") == 12, res
    return events


def _ids(body):
    return [e["id"] for e in body["events"]]


def test_list_events_filters(base_url, tenant):
    client = sdk(base_url, tenant.key, sync=True)
    try:
        events = seed_filter_set(client)
        la = client.audit.list_events

        def expect(pred):
            return [e["id"] for e in events if pred(e)]

        cases = {
            "action": ({"action": "doc.delete"}, lambda e: e["action"] == "doc.delete"),
            "actor_id": ({"actor_id": "bob"}, lambda e: e["actor"]["id"] == "bob"),
            "outcome": ({"outcome": "failure"}, lambda e: e["outcome"] == "failure"),
            "actor_type": ({"actor_type": "agent"}, lambda e: e["actor"]["type"] == "agent"),
            "resource_id": ({"resource_id": "r-3"}, lambda e: e["resource"]["id"] == "r-3"),
            "action+outcome": (
                {"action": "doc.read", "outcome": "success"},
                lambda e: e["action"] == "doc.read" and e["outcome"] == "success",
            ),
            "no match": ({"actor_id": "mallory"}, lambda e: False),
        }
        for name, (params, pred) in cases.items():
            body = la(**params)
            want = expect(pred)
            assert _ids(body) == want, f"filter {name} {params}: got {_ids(body)}, want {want}"
            assert body["total"] == len(want), f"filter {name}: total {body['total']} != {len(want)}"

        # from/to bound the event timestamp (bounds chosen strictly between events)
        body = la(**{"from": "2024-01-01T00:00:25Z", "to": "2024-01-01T00:01:05Z"})
        assert _ids(body) == ["f-03", "f-04", "f-05", "f-06"], _ids(body)
        assert body["total"] == 4

        # page / page_size, 1-based pages in sequence order
        body = la(page=2, page_size=5)
        assert [e["sequence_number"] for e in body["events"]] == [6, 7, 8, 9, 10], body
        assert body["total"] == 12 and body["page"] == 2 and body["page_size"] == 5, {
            k: body.get(k) for k in ("total", "page", "page_size")
        }
        body = la(page=3, page_size=5)
        assert [e["sequence_number"] for e in body["events"]] == [11, 12]
        body = la(page=4, page_size=5)
        assert body["events"] == [] and body["total"] == 12
        body = la(action="doc.read", page=2, page_size=2)
        assert _ids(body) == ["f-06", "f-09"] and body["total"] == 4, body
        body = la()
        assert body["page"] == 1 and body["page_size"] == 50 and body["total"] == 12, {
            k: body.get(k) for k in ("total", "page", "page_size")
        }
        for rec in body["events"]:
            check_record_shape(rec, tenant.name)

        with pytest.raises(fact0.TransportError) as ei:
            la(page_size=1001)
        assert ei.value.status_code == 400, str(ei.value)
    finally:
        client.close()


# --------------------------------------------------------------------------- verify


def test_verify_and_verify_event(base_url, tenant):
    client = sdk(base_url, tenant.key, batch_max_wait_ms=60_000)
    try:
        res = client.audit.log_batch([ev(i) for i in range(7)])
        assert res.get("accepted") == 7, res
        client.audit.log(
            actor={"id": "late", "type": "agent"},
            action="task.run",
            resource={"id": "t-1", "type": "task"},
            outcome="error",
            event_id="late-1",
        )
        client.audit.flush()

        v = client.audit.verify()
        assert v["valid"] is True, v
        assert v["events_checked"] == 8, v
        assert v["tenant_id"] == tenant.name, v
        assert isinstance(v.get("root_hash"), str) and len(v["root_hash"]) == 64, v

        for eid in ["evt-00000", "evt-00003", "late-1"]:
            rec = client.audit.get_event(event_id=eid)
            r = client.audit.verify_event(event_id=eid)
            assert r["valid"] is True, r
            assert r["event_id"] == eid, r
            assert r["stored_hash"] == r["computed_hash"] == rec["hash"] == jcs_hash(rec), (r, rec["hash"])
        late = client.audit.get_event(event_id="late-1")
        assert late["sequence_number"] == 8 and late["metadata"] == {}, late

        with pytest.raises(fact0.TransportError) as ei:
            client.audit.verify_event(event_id="missing")
        assert ei.value.status_code == 404, str(ei.value)
    finally:
        client.close()


# --------------------------------------------------------------------------- stream


def test_stream_events(base_url, tenant):
    client = sdk(base_url, tenant.key, sync=True)
    writer = sdk(base_url, tenant.key, sync=True)
    try:
        writer.audit.log_batch([ev(i, id=f"pre-{i}") for i in range(3)])

        reader = BackgroundIter(client.audit.stream_events)
        got: dict[str, dict] = {}
        logged: list[str] = []
        deadline = time.monotonic() + 20
        round_ = 0
        # The stream may start at the tail: keep logging small batches until events
        # written after the subscription arrive.
        while time.monotonic() < deadline and not (logged and all(i in got for i in logged[-3:])):
            batch = [ev(100 + round_ * 3 + j, id=f"live-{round_}-{j}") for j in range(3)]
            writer.audit.log_batch(batch)
            logged.extend(e["id"] for e in batch)
            round_ += 1
            t_end = time.monotonic() + 2
            while time.monotonic() < t_end:
                try:
                    rec = reader.get(timeout=max(0.05, t_end - time.monotonic()))
                except queue.Empty:
                    break
                got[rec["id"]] = rec
                if all(i in got for i in logged[-3:]):
                    break
        last = logged[-3:]
        assert last and all(i in got for i in last), (
            f"stream did not deliver events logged after subscribing; got ids {sorted(got)}, wanted {last}"
        )
        for rec in got.values():
            check_record_shape(rec, tenant.name)
            assert jcs_hash(rec) == rec["hash"]
            assert rec == writer.audit.get_event(event_id=rec["id"]), "streamed record differs from stored"
        seqs = sorted(r["sequence_number"] for r in got.values())
        # everything delivered after the first streamed record is gapless
        assert seqs == list(range(seqs[0], seqs[-1] + 1)), f"stream skipped sequence numbers: {seqs}"
        # let the reader close the SDK's stream: stop, then wake it with one more event
        reader.stop()
        writer.audit.log_batch([ev(999, id="wake-reader")])
    finally:
        client.close()
        writer.close()


# --------------------------------------------------------------------------- sync mode


def test_sync_mode(base_url, tenant, thread_errors):
    client = sdk(base_url, tenant.key, sync=True, batch_max_wait_ms=60_000)
    try:
        res = client.audit.log_batch([ev(i) for i in range(3)])
        assert "receipt_id" not in res or res.get("status") == "committed", res
        assert res["accepted"] == 3 and res["rejected"] == 0, res
        assert res["ids"] == ["evt-00000", "evt-00001", "evt-00002"], res
        assert res.get("errors") in ([], None), res
        recs = res.get("events")
        assert isinstance(recs, list) and len(recs) == 3, f"sync batch result lacks committed records: {res}"
        assert [r["sequence_number"] for r in recs] == [1, 2, 3]
        assert [r["id"] for r in recs] == res["ids"]
        check_chain(recs, tenant.name)
        # committed means readable at once, no receipt polling
        assert client.audit.get_event(event_id="evt-00001") == recs[1]

        client.audit.log(
            actor={"id": "alice", "type": "human"},
            action="doc.share",
            resource={"id": "d-1", "type": "doc"},
            outcome="success",
            event_id="sync-log-1",
        )
        client.audit.flush()
        rec = client.audit.get_event(event_id="sync-log-1")
        assert rec["sequence_number"] == 4 and rec["prev_hash"] == recs[2]["hash"], rec

        # per-item errors: index 1 is not dot-notation (empty segment)
        res = client.audit.log_batch([ev(10), ev(11, action="document..delete"), ev(12)])
        assert res["accepted"] == 2 and res["rejected"] == 1, res
        errs = res.get("errors")
        assert isinstance(errs, list) and len(errs) == 1 and errs[0]["index"] == 1, res
        assert errs[0].get("code") and errs[0].get("message"), res
        assert "evt-00010" in res["ids"] and "evt-00012" in res["ids"] and "evt-00011" not in res["ids"], res

        body = client.audit.list_events(page_size=1000)
        assert [e["id"] for e in body["events"]] == [
            "evt-00000", "evt-00001", "evt-00002", "sync-log-1", "evt-00010", "evt-00012",
        ]
        check_chain(body["events"], tenant.name)
    finally:
        client.close()
    assert not thread_errors, thread_errors


# --------------------------------------------------------------------------- auth errors


def test_scope_and_auth_errors(base_url, tenant, make_key):
    ro_key = make_key(tenant.name, "read")
    wo_key = make_key(tenant.name, "write")

    ro = sdk(base_url, ro_key, batch_max_wait_ms=60_000)
    try:
        with pytest.raises(fact0.TransportError) as ei:
            ro.audit.log_batch([ev(0)])
        assert ei.value.status_code == 403, str(ei.value)

        ro.audit.log(
            actor={"id": "a", "type": "human"},
            action="x.y",
            resource={"id": "r", "type": "t"},
            outcome="success",
        )
        with pytest.raises(fact0.TransportError) as ei:
            ro.audit.flush()
        assert ei.value.status_code == 403, str(ei.value)
        # reading is allowed
        assert ro.audit.list_events()["total"] == 0
        assert ro.audit.verify()["events_checked"] == 0
    finally:
        ro.close()

    wo = sdk(base_url, wo_key)
    try:
        assert wo.audit.log_batch([ev(0)])["accepted"] == 1
        with pytest.raises(fact0.TransportError) as ei:
            wo.audit.list_events()
        assert ei.value.status_code == 403, str(ei.value)
        with pytest.raises(fact0.TransportError) as ei:
            wo.audit.verify()
        assert ei.value.status_code == 403, str(ei.value)
    finally:
        wo.close()

    bad = sdk(base_url, "alk_live_" + "0" * 40)
    try:
        with pytest.raises(fact0.TransportError) as ei:
            bad.audit.list_events()
        assert ei.value.status_code == 401, str(ei.value)
        with pytest.raises(fact0.TransportError) as ei:
            bad.audit.log_batch([ev(0)])
        assert ei.value.status_code == 401, str(ei.value)
    finally:
        bad.close()

    # error body shape, checked on the wire
    check_error(requests.post(f"{base_url}/v1/events/batch", json={"events": [ev(1)]},
                              headers=auth(ro_key), timeout=HTTP_TIMEOUT), 403)
    check_error(requests.get(f"{base_url}/v1/events", headers=auth(wo_key), timeout=HTTP_TIMEOUT), 403)
    check_error(requests.get(f"{base_url}/v1/events", timeout=HTTP_TIMEOUT), 401)
    check_error(requests.get(f"{base_url}/v1/events", headers=auth("alk_live_nope"), timeout=HTTP_TIMEOUT), 401)
    check_error(requests.get(f"{base_url}/v1/events/nope", headers=auth(ro_key), timeout=HTTP_TIMEOUT), 404)


def test_sync_batch_non_ijson_item_is_a_per_item_error(base_url, tenant):
    """A batch item that is not I-JSON (integer beyond 2^53-1) is an invalid item:
    rejected by index, the other items committed (per-item errors)."""
    client = sdk(base_url, tenant.key, sync=True)
    try:
        res = client.audit.log_batch([ev(0), ev(1, metadata={"n": 9007199254740992}), ev(2)])
        assert res["accepted"] == 2 and res["rejected"] == 1, res
        errs = res.get("errors")
        assert isinstance(errs, list) and len(errs) == 1 and errs[0]["index"] == 1, res
        assert errs[0].get("code") and errs[0].get("message"), res
        body = client.audit.list_events()
        assert [e["id"] for e in body["events"]] == ["evt-00000", "evt-00002"], body
    finally:
        client.close()
