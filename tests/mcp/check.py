"""Drives sandboxd's MCP tools with the official MCP Python client (`mcp` on PyPI), over one
transport, and exits non-zero at the first thing that is not as an agent needs it.

    python tests/mcp/check.py http URL KEY OTHER_KEY      # Streamable HTTP at URL (…/mcp)
    python tests/mcp/check.py stdio SBX URL KEY OTHER_KEY # `SBX mcp`, against sandboxd at URL

KEY and OTHER_KEY are API keys of two tenants. crates/sandboxd/tests/mcp.rs runs both.
"""

import asyncio
import contextlib
import sys
import time

import anyio
from mcp import ClientSession
from mcp.client.stdio import StdioServerParameters, stdio_client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared._httpx_utils import create_mcp_http_client

from checks import check, texts

TOOLS = {
    "create_session", "run_code", "list_files", "read_file", "write_file",
    "install_packages", "restart_kernel", "delete_session",
}


@contextlib.asynccontextmanager
async def connect(transport, args, key):
    if transport == "http":
        url = args[0]
        http = create_mcp_http_client(headers={"Authorization": f"Bearer {key}"})
        async with http, streamable_http_client(url, http_client=http) as (read, write), \
                ClientSession(read, write) as session:
            await session.initialize()
            yield session
    else:
        sbx, url = args[0], args[1]
        params = StdioServerParameters(
            command=sbx, args=["mcp", "--url", url], env={"SANDBOX_API_KEY": key}
        )
        async with stdio_client(params) as (read, write), ClientSession(read, write) as session:
            await session.initialize()
            yield session


async def main(transport, args, key, other_key):
    async with connect(transport, args, key) as s:
        tools = {t.name: t for t in (await s.list_tools()).tools}
        check(TOOLS <= set(tools), f"the tools are listed: {sorted(tools)}")
        check(all(tools[n].description and tools[n].input_schema for n in TOOLS), "each with a description and schema")

        first = await s.call_tool("run_code", {"code": "x = 2"})
        check(not first.is_error, "run_code without a session runs", first)
        session = first.structured_content["session_id"]
        check(session.startswith("ses_"), f"and says which session it made: {session}")
        answer = await s.call_tool("run_code", {"code": "x * 21", "session_id": session})
        check("42" in texts(answer) and not answer.is_error, "state carries over: x * 21 is 42", answer)
        check(answer.structured_content["execution"]["outputs"][0]["type"] == "execute_result",
              "the full Jupyter-shaped outputs come as structured content", answer.structured_content)

        plot = await s.call_tool("run_code", {"session_id": session, "code": (
            "import matplotlib.pyplot as plt\nplt.plot([1, 2, 3], [1, 4, 9])\nplt.show()")})
        images = [c for c in plot.content if c.type == "image"]
        check(len(images) == 1 and images[0].mime_type == "image/png" and len(images[0].data) > 1000,
              "a matplotlib figure comes back as PNG image content", plot)

        raised = await s.call_tool("run_code", {"session_id": session, "code": "1 / 0"})
        check(raised.is_error and "ZeroDivisionError" in texts(raised), "an exception is isError with its traceback", raised)

        written = await s.call_tool("write_file", {"session_id": session, "path": "notes/hello.txt", "content": "héllo"})
        check(not written.is_error, "write_file", written)
        read = await s.call_tool("read_file", {"session_id": session, "path": "notes/hello.txt"})
        check(texts(read) == "héllo", "read_file gives back what was written", read)
        seen = await s.call_tool("run_code", {"session_id": session, "code": "print(open('notes/hello.txt').read())"})
        check("héllo" in texts(seen), "and code in the session sees it", seen)
        await s.call_tool("run_code", {"session_id": session, "code": "plt.plot([1, 2]); plt.savefig('chart.png')"})
        chart = await s.call_tool("read_file", {"session_id": session, "path": "chart.png"})
        check(chart.content and chart.content[0].type == "image", "read_file of a PNG is image content", chart)
        listed = await s.call_tool("list_files", {"session_id": session})
        check("chart.png" in texts(listed) and "notes/" in texts(listed), "list_files", listed)
        resource = await s.read_resource(f"sandbox://sessions/{session}/files/notes/hello.txt")
        check(resource.contents[0].text == "héllo", "workspace files are resources", resource)

        progress = []

        async def on_progress(value, total, message):
            progress.append(message)

        streamed = await s.call_tool(
            "run_code",
            {"session_id": session, "code": "import time\nfor i in range(3):\n    print('step', i, flush=True)\n    time.sleep(0.3)"},
            progress_callback=on_progress,
        )
        check(not streamed.is_error and len(progress) >= 2, f"progress notifications as output arrives: {progress}", streamed)

        # Cancelled mid-cell: the cell is interrupted, the kernel and what it held stay.
        with anyio.move_on_after(3):
            await s.call_tool("run_code", {"session_id": session, "code": "y = 7\nimport time\ntime.sleep(60)"})
        check(True, "a long run_code was cancelled by the client")
        cancelled_at, after = time.monotonic(), None
        for _ in range(40):
            after = await s.call_tool("run_code", {"session_id": session, "code": "y * 6", "timeout_s": 5})
            if "42" in texts(after):
                break
            await asyncio.sleep(0.25)
        # Not interrupted, the cell would hold the session's turn for its whole minute.
        waited = time.monotonic() - cancelled_at
        check("42" in texts(after) and waited < 20,
              f"the cancelled cell was interrupted ({waited:.1f} s) and the kernel kept its state", after)

        if transport == "stdio":
            again = await s.call_tool("run_code", {"code": "x + 40"})
            check("42" in texts(again), "over stdio, calls without a session id share the first one's", again)
            resources = (await s.list_resources()).resources
            check(any(str(r.uri).endswith("/files/chart.png") for r in resources),
                  "and its files are listed as resources", resources)

    async with connect(transport, args, other_key) as other:
        theirs = await other.call_tool("run_code", {"session_id": session, "code": "print(x)"})
        check(theirs.is_error and "not found" in texts(theirs), "another tenant's session is not found", theirs)
        files = await other.call_tool("read_file", {"session_id": session, "path": "notes/hello.txt"})
        check(files.is_error and "not found" in texts(files), "nor are its files", files)

    async with connect(transport, args, key) as s:
        gone = await s.call_tool("delete_session", {"session_id": session})
        check(not gone.is_error, "delete_session", gone)
    print(f"MCP over {transport}: all checks passed")


if __name__ == "__main__":
    transport, rest = sys.argv[1], sys.argv[2:]
    *args, key, other_key = rest
    anyio.run(main, transport, args, key, other_key)
