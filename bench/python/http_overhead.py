# The HTTP side of bench/http-overhead.ts: the app's backend calling a server the way the seed's plan does
# (a new httpx.AsyncClient per call: "async with httpx.AsyncClient() as client"), and the way that costs
# least (one AsyncClient for the process: its connection pool keeps the connection alive), optionally over
# HTTP/2 and with concurrent calls. Prints {"name": [milliseconds per call, ...], ...}.
#
#   python3 bench/python/http_overhead.py SPEC.json
# SPEC: {"calls": N, "warmup": W, "targets": [{"name", "url", "body", "pattern": "new" | "reused",
#        "http2": false, "concurrency": 1}]}
import asyncio
import json
import sys
import time

import httpx


async def call(client, url, body):
    response = await client.post(url, json=body)
    response.raise_for_status()
    response.json()


async def measure(target, calls, warmup):
    url, body = target["url"], target["body"]
    http2 = target.get("http2", False)
    concurrency = target.get("concurrency", 1)
    times = []
    if target["pattern"] == "new":
        for i in range(warmup + calls):
            started = time.perf_counter()
            async with httpx.AsyncClient(timeout=60.0, http2=http2) as client:
                await call(client, url, body)
            if i >= warmup:
                times.append((time.perf_counter() - started) * 1000)
        return times
    async with httpx.AsyncClient(timeout=60.0, http1=not http2, http2=http2) as client:
        for i in range(warmup + calls):
            started = time.perf_counter()
            await asyncio.gather(*(call(client, url, body) for _ in range(concurrency)))
            if i >= warmup:
                # Wall time of the round per call: what concurrency on one client buys.
                times.append((time.perf_counter() - started) * 1000 / concurrency)
    return times


async def main():
    with open(sys.argv[1]) as f:
        spec = json.load(f)
    out = {}
    for target in spec["targets"]:
        out[target["name"]] = await measure(target, spec["calls"], spec.get("warmup", 2))
    print(json.dumps(out))


asyncio.run(main())
