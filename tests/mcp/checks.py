"""What the MCP check scripts share: reading a tool's text, and stopping at the first failure."""


def texts(result):
    return "\n".join(c.text for c in result.content if c.type == "text")


def check(ok, what, result=None):
    if not ok:
        detail = "" if result is None else f"\n  got: {result!r}"
        raise SystemExit(f"MCP check failed: {what}{detail}")
    print(f"ok: {what}")
