#!/usr/bin/env python3
"""Read latencies of a filled server (used by bench/scale.sh).

For one tenant's key: N requests each of GET /v1/events/{id} (random ids, found through
random pages), a one-filter list with its total (GET /v1/events?action=…&page_size=50),
GET /v1/checkpoint?fresh=true and an inclusion proof of a random record; prints p50/p99
in ms per kind. Keep-alive connection, one request at a time, while nothing else loads
the server.
"""
import random
import sys
import time

import requests

base, key, n = sys.argv[1], sys.argv[2], int(sys.argv[3]) if len(sys.argv) > 3 else 200
s = requests.Session()
s.headers["Authorization"] = f"Bearer {key}"


def get(path):
    t = time.perf_counter()
    r = s.get(base + path)
    ms = (time.perf_counter() - t) * 1000
    if r.status_code != 200:
        sys.exit(f"{path} -> {r.status_code} {r.text[:200]}")
    return r, ms


total = get("/v1/events?page_size=1")[0].json()["total"]
if total == 0:
    sys.exit("the tenant has no events")
random.seed(7)
ids = []
for _ in range(n):
    page = random.randint(1, total)
    ids.append(get(f"/v1/events?page={page}&page_size=1")[0].json()["events"][0]["id"])
action = get("/v1/events?page_size=1")[0].json()["events"][0]["action"]


def pct(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(len(xs) * p))]


def report(name, times, extra=""):
    print(f"  {name:<42} p50 {pct(times, 0.5):7.2f} ms   p99 {pct(times, 0.99):7.2f} ms{extra}")


report("GET /v1/events/{id}", [get(f"/v1/events/{i}")[1] for i in ids])
times, totals = [], set()
for _ in range(n):
    r, ms = get(f"/v1/events?action={action}&page_size=50")
    times.append(ms)
    totals.add(r.json()["total"])
report("list, one filter, with total", times, f"   (total {max(totals)})")
report("GET /v1/checkpoint?fresh=true", [get("/v1/checkpoint?fresh=true")[1] for _ in range(n)])
report(
    "inclusion proof of a random record",
    [get(f"/v1/proof/inclusion?sequence_number={random.randint(1, total)}")[1] for _ in range(n)],
)
