# VERBATIM from the seed (plan-b-llm-microservice.md, "Flujo de llamada desde backend principal"):
# the backend call as the plan first wrote it. Do not edit below this header; run_seed_client.py
# points LLM_SERVICE_URL at the test service and gives the method its `self`.

import httpx

LLM_SERVICE_URL = "http://localhost:8001"

async def generate_response(self, query: str, context_docs: list):
    messages = self._build_messages(query, context_docs)
    
    async with httpx.AsyncClient() as client:
        response = await client.post(
            f"{LLM_SERVICE_URL}/api/llm/generate",
            json={
                "messages": messages,
                "max_new_tokens": 250,
                "temperature": 0.5,
                "top_p": 0.9
            },
            timeout=60.0
        )
        response.raise_for_status()
        result = response.json()
        return result["answer"]
