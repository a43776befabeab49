# The app's backend continuing its own trace into this service: the seed's httpx call with a W3C
# traceparent (and tracestate) header, as OpenTelemetry's httpx instrumentation would inject it. Prints
# the ids it sent and what came back; test/tracing.test.ts finds them in the exported spans and logs.
#
#   python3 test/python/traced_call.py http://127.0.0.1:PORT
import asyncio
import json
import secrets
import sys

import httpx

BASE = sys.argv[1]


async def main():
    trace_id = secrets.token_hex(16)
    parent_span_id = secrets.token_hex(8)
    headers = {
        "traceparent": f"00-{trace_id}-{parent_span_id}-01",
        "tracestate": "bora=backend",
        "x-request-id": f"py-{parent_span_id}",
    }
    async with httpx.AsyncClient(timeout=60.0) as client:
        response = await client.post(
            f"{BASE}/api/llm/generate",
            json={"messages": [{"role": "user", "content": "¿Qué es la fotosíntesis?"}], "max_new_tokens": 3, "temperature": 0.5, "top_p": 0.9},
            headers=headers,
        )
        response.raise_for_status()
    print(json.dumps({
        "trace_id": trace_id,
        "parent_span_id": parent_span_id,
        "request_id": response.headers.get("x-request-id"),
        "tokens": response.json()["tokens_generated"],
    }))


asyncio.run(main())
