"""Drives sandboxd's E2B-compatible API with the official E2B SDKs (`e2b`,
`e2b-code-interpreter` from PyPI, unchanged), pointed at it by their own variables, and exits
non-zero at the first thing that is not as an E2B user expects it.

    E2B_API_URL=URL/e2b E2B_SANDBOX_URL=URL/e2b/sandbox E2B_API_KEY=KEY \
        python tests/e2b/check.py main OTHER_KEY   # everything but the idle timeout
    ... python tests/e2b/check.py idle             # sandboxd started with a short idle timeout

crates/sandboxd/tests/e2b.rs runs both.
"""

import sys
import time
import uuid

from e2b import NotFoundException, SandboxQuery, SandboxState
from e2b.sandbox.commands.command_handle import CommandExitException
from e2b_code_interpreter import Sandbox


def check(ok, what, got=None):
    if not ok:
        raise SystemExit(f"E2B check failed: {what}" + ("" if got is None else f"\n  got: {got!r}"))
    print(f"ok: {what}")


def until(condition, seconds):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.25)
    return False


def main(other_key):
    run = uuid.uuid4().hex
    sbx = Sandbox.create(template="code-interpreter-v1", timeout=120, metadata={"run": run})
    check(sbx.sandbox_id.startswith("ses_") and sbx.is_running(), f"Sandbox.create: {sbx.sandbox_id}")

    # run_code: state, streams as they come, results, errors, another language, counts.
    first = sbx.run_code("x = 2")
    answer = sbx.run_code("x * 21")
    check(answer.text == "42", "state carries across run_code calls", answer)
    check(answer.execution_count and answer.execution_count > (first.execution_count or 0),
          f"execution_count counts cells ({first.execution_count}, {answer.execution_count})")
    seen = []
    started = time.monotonic()
    streamed = sbx.run_code(
        "import sys, time\nprint('one', flush=True)\ntime.sleep(1)\nprint('oops', file=sys.stderr, flush=True)\n"
        "time.sleep(1)\nprint('two')",
        on_stdout=lambda m: seen.append(("out", m.line, time.monotonic() - started)),
        on_stderr=lambda m: seen.append(("err", m.line, time.monotonic() - started)),
    )
    ended = time.monotonic() - started
    check([s[:2] for s in seen] == [("out", "one\n"), ("err", "oops\n"), ("out", "two\n")],
          "stdout and stderr callbacks, in order", seen)
    check(seen[0][2] < ended - 1.5, f"the first line arrived while the code ran ({seen[0][2]:.1f} s of {ended:.1f} s)")
    check(streamed.logs.stdout == ["one\n", "two\n"] and streamed.logs.stderr == ["oops\n"], "logs", streamed.logs)
    plot = sbx.run_code("import matplotlib.pyplot as plt\nplt.plot([1, 2, 3], [1, 4, 9])\nplt.show()")
    check(len(plot.results) == 1 and plot.results[0].png and len(plot.results[0].png) > 1000,
          "a matplotlib figure is a result with png", plot.results)
    html = sbx.run_code("from IPython.display import HTML\nHTML('<b>bold</b>')")
    check(html.results and html.results[0].html == "<b>bold</b>" and html.results[0].is_main_result,
          "a rich result carries html", html.results)
    raised = sbx.run_code("1 / 0")
    check(raised.error and raised.error.name == "ZeroDivisionError" and raised.error.value == "division by zero"
          and "1 / 0" in raised.error.traceback, "an exception is error with name, value and traceback", raised.error)
    js = sbx.run_code("console.log(6 * 7)", language="js")
    check(js.logs.stdout == ["42\n"] and js.error is None, "another language (JavaScript on Node.js)", js)

    # Code contexts: namespaces of their own; a restart clears one.
    ctx = sbx.create_code_context()
    check(sbx.run_code("x", context=ctx).error.name == "NameError", "a new context does not see the default's x")
    sbx.run_code("y = 5", context=ctx)
    check(sbx.run_code("y", context=ctx).text == "5", "a context keeps its own state")
    check(sbx.run_code("x").text == "2", "and the default context keeps its own")
    check(any(c.id == ctx.id for c in sbx.list_code_contexts()), "list_code_contexts lists it")
    sbx.restart_code_context(ctx)
    check(sbx.run_code("y", context=ctx).error.name == "NameError", "restart_code_context clears the context")

    # Files and the filesystem.
    info = sbx.files.write("/home/user/notes/hello.txt", "héllo")
    check(info.path == "/home/user/notes/hello.txt", "files.write", info)
    check(sbx.files.read("/home/user/notes/hello.txt") == "héllo", "files.read gives back what was written")
    check(sbx.run_code("print(open('notes/hello.txt').read())").logs.stdout == ["héllo\n"], "code sees the file")
    sbx.files.write("data.bin", b"\x00\x01\x02")
    check(bytes(sbx.files.read("/home/user/data.bin", format="bytes")) == b"\x00\x01\x02", "binary files")
    names = {e.name: e.type.value for e in sbx.files.list("/home/user")}
    check(names.get("notes") == "dir" and names.get("data.bin") == "file", "files.list", names)
    check(sbx.files.exists("/home/user/notes/hello.txt") and not sbx.files.exists("/home/user/nope"), "files.exists")
    check(sbx.files.make_dir("/home/user/made/deep") and not sbx.files.make_dir("/home/user/made/deep"),
          "files.make_dir, and False when it exists")
    moved = sbx.files.rename("/home/user/notes/hello.txt", "/home/user/made/deep/hello.txt")
    check(moved.path == "/home/user/made/deep/hello.txt" and not sbx.files.exists("/home/user/notes/hello.txt"),
          "files.rename", moved)
    sbx.files.remove("/home/user/made")
    check(not sbx.files.exists("/home/user/made"), "files.remove")

    # Commands.
    ran = sbx.commands.run("echo hi")
    check(ran.exit_code == 0 and ran.stdout == "hi\n", "commands.run('echo hi')", ran)
    try:
        sbx.commands.run("echo no >&2; exit 3")
        check(False, "a failing command raises")
    except CommandExitException as e:
        check(e.exit_code == 3 and e.stderr == "no\n", "a failing command raises with its exit code and stderr", e)

    # Listing, connecting, timeouts and pauses.
    listed = [s.sandbox_id for s in Sandbox.list().next_items()]
    check(sbx.sandbox_id in listed, "Sandbox.list lists it", listed)
    mine = [s.sandbox_id for s in Sandbox.list(query=SandboxQuery(metadata={"run": run})).next_items()]
    check(mine == [sbx.sandbox_id], "and filters by metadata", mine)
    again = Sandbox.connect(sbx.sandbox_id)
    check(again.sandbox_id == sbx.sandbox_id and again.run_code("x").text == "2", "Sandbox.connect(id) reaches it")
    sbx.set_timeout(2)
    check(until(lambda: not sbx.is_running(), 15), "set_timeout: the sandbox stops when its time is up")
    check(sbx.get_info().state == SandboxState.PAUSED, "and is paused (its files kept)")
    resumed = Sandbox.connect(sbx.sandbox_id, timeout=60)
    check(resumed.is_running() and resumed.files.exists("/home/user/data.bin"), "connect resumes it, files and all")

    # Tenants: another key's sandboxes are not found.
    try:
        Sandbox.connect(sbx.sandbox_id, api_key=other_key)
        check(False, "another tenant cannot connect")
    except NotFoundException:
        check(True, "another tenant's connect is NotFound")
    check(Sandbox.kill(sbx.sandbox_id, api_key=other_key) is False, "and its kill finds nothing")
    check(sbx.sandbox_id not in [s.sandbox_id for s in Sandbox.list(api_key=other_key).next_items()],
          "nor does its list show it")

    base = Sandbox.create(template="base", timeout=60)
    check(base.run_code("1 + 1").text == "2", "template 'base' is the default template")
    base.kill()
    try:
        Sandbox.create(template="no-such-template", timeout=60)
        check(False, "an unknown template is refused")
    except Exception as e:  # noqa: BLE001 - the SDK's exception for a 400
        check("no-such-template" in str(e), "an unknown template is refused, naming it", e)

    check(sbx.kill() and not sbx.is_running(), "kill()")
    check(sbx.sandbox_id not in [s.sandbox_id for s in Sandbox.list().next_items()], "a killed sandbox is not listed")
    print("E2B main: all checks passed")


def idle():
    sbx = Sandbox.create(timeout=300)
    sbx.run_code("z = 1")
    check(until(lambda: not sbx.is_running(), 20), "a sandbox left idle stops at sandboxd's idle timeout")
    check(sbx.get_info().state == SandboxState.PAUSED, "and is paused")
    check(sbx.run_code("1 + 2").text == "3", "used again, it resumes (a fresh kernel)")
    sbx.kill()
    print("E2B idle: all checks passed")


if __name__ == "__main__":
    if sys.argv[1] == "main":
        main(sys.argv[2])
    else:
        idle()
