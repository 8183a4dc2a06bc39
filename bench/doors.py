"""One stateful `print(1)` through each door of sandboxd, as a client sees it, calls interleaved
so all three share the machine's noise:

- REST: a lean keep-alive HTTP client (httpx), POST /v1/sessions/{id}/executions;
- E2B: the official SDK, `Sandbox.run_code` (E2B_API_URL and E2B_SANDBOX_URL point it here);
- MCP: the official `mcp` client over Streamable HTTP, `run_code` with the session id;
- MCP, lean: the same JSON-RPC call over the same keep-alive httpx client as REST, which
  separates what the server's MCP path costs from what the official client adds.

    python bench/doors.py URL KEY N

Prints `rest_p50_ms=… rest_p99_ms=… e2b_p50_ms=… … mcp_p99_ms=…` (sandbox-bench reads it).
"""

import asyncio
import os
import sys
import time

import httpx
from e2b_code_interpreter import Sandbox
from mcp import ClientSession
from mcp.client.streamable_http import streamable_http_client
from mcp.shared._httpx_utils import create_mcp_http_client


def q(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(p * len(xs)))]


async def main(url, key, n):
    os.environ.update(E2B_API_URL=f"{url}/e2b", E2B_SANDBOX_URL=f"{url}/e2b/sandbox", E2B_API_KEY=key)
    headers = {"Authorization": f"Bearer {key}"}
    rest = httpx.Client(base_url=url, headers=headers, timeout=60)
    session = rest.post("/v1/sessions", json={}).json()["id"]
    sbx = await asyncio.to_thread(Sandbox.create, timeout=600)
    http = create_mcp_http_client(headers=headers)
    async with http, streamable_http_client(f"{url}/mcp", http_client=http) as (r, w), ClientSession(r, w) as mcp:
        await mcp.initialize()
        mcp_session = (await mcp.call_tool("run_code", {"code": "pass"})).structured_content["session_id"]

        def by_rest():
            out = rest.post(f"/v1/sessions/{session}/executions", json={"language": "python", "code": "print(1)"})
            assert out.json()["stdout"] == "1\n", out.text

        def by_e2b():
            assert sbx.run_code("print(1)").logs.stdout == ["1\n"]

        async def by_mcp():
            out = await mcp.call_tool("run_code", {"code": "print(1)", "session_id": mcp_session})
            assert out.content[0].text == "1\n", out

        lean = httpx.Client(base_url=url, timeout=60, headers={
            **headers, "Accept": "application/json, text/event-stream", "Mcp-Protocol-Version": "2025-06-18"})
        hello = {"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "lean", "version": "1"}}
        opened = lean.post("/mcp", json={"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": hello})
        lean.headers["Mcp-Session-Id"] = opened.headers["mcp-session-id"]
        lean.post("/mcp", json={"jsonrpc": "2.0", "method": "notifications/initialized"})

        def by_mcp_lean():
            call = {"name": "run_code", "arguments": {"code": "print(1)", "session_id": mcp_session}}
            out = lean.post("/mcp", json={"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": call}).text
            assert '"text":"1\\n"' in out, out

        times = {"rest": [], "e2b": [], "mcp": [], "mcp_lean": []}
        for i in range(n + 10):
            for name, call in (("rest", by_rest), ("e2b", by_e2b), ("mcp", by_mcp), ("mcp_lean", by_mcp_lean)):
                start = time.perf_counter()
                if asyncio.iscoroutinefunction(call):
                    await call()
                else:
                    call()
                if i >= 10:
                    times[name].append((time.perf_counter() - start) * 1000)
    sbx.kill()
    rest.delete(f"/v1/sessions/{session}")
    print(" ".join(f"{name}_p50_ms={q(t, .5):.2f} {name}_p99_ms={q(t, .99):.2f}" for name, t in times.items()))


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2], int(sys.argv[3])))
