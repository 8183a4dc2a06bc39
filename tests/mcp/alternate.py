"""The official MCP Python client (`mcp` on PyPI) behind a balancer that sends each of its HTTP
requests to the next of several sandboxd replicas in turn, as a load balancer without sticky
sessions would. Exits non-zero at the first thing that is not as an agent needs it.

    python tests/mcp/alternate.py URL_A URL_B     # the replicas' base URLs

crates/sandboxd/tests/replicas.rs runs it against two replicas on one database.
"""

import asyncio
import sys

import httpx
from mcp import ClientSession
from mcp.client.streamable_http import streamable_http_client

from checks import check, texts


class Alternate(httpx.AsyncBaseTransport):
    """Sends each request to the next replica in turn, and counts where each went."""

    def __init__(self, bases):
        self.bases = [httpx.URL(b) for b in bases]
        self.sent = [0] * len(bases)
        self.inner = httpx.AsyncHTTPTransport()

    async def handle_async_request(self, request):
        i = sum(self.sent) % len(self.bases)
        self.sent[i] += 1
        base = self.bases[i]
        request.url = request.url.copy_with(scheme=base.scheme, host=base.host, port=base.port)
        request.headers["host"] = f"{base.host}:{base.port}"
        return await self.inner.handle_async_request(request)

    async def aclose(self):
        await self.inner.aclose()


async def main(bases):
    balancer = Alternate(bases)
    http = httpx.AsyncClient(transport=balancer, timeout=60)
    async with http, streamable_http_client(f"{bases[0]}/mcp", http_client=http) as (read, write), \
            ClientSession(read, write) as s:
        await s.initialize()
        tools = {t.name for t in (await s.list_tools()).tools}
        check("run_code" in tools, f"the tools are listed through the balancer: {sorted(tools)}")
        made = await s.call_tool("create_session", {})
        session = made.structured_content["id"]
        check(not made.is_error and session, f"a session is made: {session}", made)
        await s.call_tool("run_code", {"session_id": session, "code": "n = 0"})
        for i in range(1, 7):
            ran = await s.call_tool("run_code", {"session_id": session, "code": "n += 1\nprint(n)"})
            check(not ran.is_error and texts(ran).strip().startswith(str(i)),
                  f"call {i}: the one kernel counts on, whichever replica the request reached", ran)
        wrote = await s.call_tool("write_file", {"session_id": session, "path": "a.txt", "content": "from MCP"})
        check(not wrote.is_error, "a file is written", wrote)
        read = await s.call_tool("read_file", {"session_id": session, "path": "a.txt"})
        check(not read.is_error and "from MCP" in texts(read), "and read back", read)
        deleted = await s.call_tool("delete_session", {"session_id": session})
        check(not deleted.is_error, "the session is deleted", deleted)
    check(all(n >= 5 for n in balancer.sent), f"every replica got requests: {balancer.sent}")
    print("all checks passed")


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1:]))
