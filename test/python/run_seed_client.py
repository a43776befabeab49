# The app's Python backend against a running service, with the real httpx (Debian's python3-httpx):
# the seed's two verbatim snippets (seed_call_flow.py, seed_backend_adapted.py), the seed's embedding
# request, streamed reads of /v1/chat/completions and /v1/responses with aiter_lines, and a 400 read
# back by raise_for_status. Prints one JSON object; test/python-client.test.ts checks it.
#
#   python3 test/python/run_seed_client.py http://127.0.0.1:PORT
import asyncio
import importlib.util
import json
import pathlib
import sys

import httpx

BASE = sys.argv[1]
HERE = pathlib.Path(__file__).parent
QUERY = "¿Qué significa 'ímihí'?"


def load_snippet(name, url):
    spec = importlib.util.spec_from_file_location(name, HERE / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.LLM_SERVICE_URL = url  # the snippet reads the global at call time
    return module


class RagService:
    """The `self` the seed's generate_response expects (the backend's rag_service)."""

    def _build_messages(self, query, context_docs):
        context = "\n".join(context_docs)
        return [
            {"role": "system", "content": f"Eres Mentor Bora. Contexto:\n{context}"},
            {"role": "user", "content": query},
        ]

    def _post_process_mentor_response(self, answer):
        return answer.strip()


async def sse_lines(client, url, body):
    """(event name, parsed data) per server-sent event, read line by line with aiter_lines."""
    events, name = [], None
    async with client.stream("POST", url, json=body) as response:
        response.raise_for_status()
        content_type = response.headers["content-type"]
        async for line in response.aiter_lines():
            # httpx 0.23 (Debian bookworm's python3-httpx) keeps each line's ending; newer ones strip it.
            line = line.rstrip("\r\n")
            if line.startswith("event: "):
                name = line[len("event: "):]
            elif line.startswith("data: "):
                data = line[len("data: "):]
                events.append((name, None if data == "[DONE]" else json.loads(data)))
                name = None
    return content_type, events


async def main():
    out = {"httpx": httpx.__version__, "python": sys.version.split()[0]}
    docs = ["ímihí: agua (lengua bora)"]
    service = RagService()

    flow = load_snippet("seed_call_flow", BASE)
    out["call_flow"] = await flow.generate_response(service, QUERY, docs)
    adapted = load_snippet("seed_backend_adapted", BASE)
    out["adapted"] = await adapted.generate_response(service, QUERY, docs)
    # The adapted snippet's fallback: an HTTP error becomes its "Error al generar respuesta" text.
    broken = load_snippet("seed_backend_adapted", BASE + "/no-such-prefix")
    out["adapted_fallback"] = await broken.generate_response(service, QUERY, docs)

    async with httpx.AsyncClient(timeout=60.0) as client:
        # The seed's embedding request, as its API section documents it.
        response = await client.post(f"{BASE}/api/llm/embed", json={"texts": ["hola", "adiós"], "model": "sentence-transformers/all-MiniLM-L6-v2"})
        response.raise_for_status()
        out["embed"] = response.json()

        messages = service._build_messages(QUERY, docs)
        content_type, events = await sse_lines(client, f"{BASE}/v1/chat/completions", {"messages": messages, "temperature": 0, "stream": True})
        chunks = [data for _, data in events if data is not None]
        out["chat_stream"] = {
            "content_type": content_type,
            "text": "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"]),
            "done": events[-1][1] is None,
        }

        content_type, events = await sse_lines(client, f"{BASE}/v1/responses", {"instructions": messages[0]["content"], "input": QUERY, "temperature": 0, "stream": True})
        out["responses_stream"] = {
            "content_type": content_type,
            "names": [name for name, _ in events],
            "types": [data["type"] for _, data in events],
            "sequence": [data["sequence_number"] for _, data in events],
            "text": "".join(data["delta"] for _, data in events if data["type"] == "response.output_text.delta"),
            "final_text": events[-1][1]["response"]["output"][0]["content"][0]["text"],
        }

        # A 400, read back by raise_for_status as the backend would meet it.
        response = await client.post(f"{BASE}/api/llm/generate", json={"messages": [], "max_new_tokens": 250})
        try:
            response.raise_for_status()
            out["error"] = None
        except httpx.HTTPStatusError as error:
            out["error"] = {"status": error.response.status_code, "body": error.response.json(), "message": str(error)}

    print(json.dumps(out, ensure_ascii=False))


asyncio.run(main())
