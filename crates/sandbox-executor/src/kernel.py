"""The session kernel of sandbox-platform.

Runs cells in one long-lived namespace, like a Jupyter kernel, and reports what they produce in
Jupyter's message model: stream, display_data, execute_result, error. It is started and driven
by sandbox-executor: requests arrive as JSON lines on fd 3, events leave as JSON lines on fd 4.

With IPython installed, cells run in IPython's InteractiveShell (magics, display(), rich reprs,
`_`, top-level await) and matplotlib figures come back as PNG through the inline backend.
Without it, cells run with plain exec and the value of a last expression is displayed.
"""

import ast
import base64
import io
import json
import os
import sys
import threading
import traceback
import types

_requests = os.fdopen(3, "rb", buffering=0)
_events = os.fdopen(4, "wb", buffering=0)
_lock = threading.Lock()
_current = None
# Bytes all outputs of the running cell may take (the request's outputs_limit): an output
# over it is never sent whole, only noted, so a huge result costs no pipe traffic or memory
# on the executor's side.
_outputs_limit = None
_outputs_used = 0
_streams = []


def _emit(msg):
    global _outputs_used
    if msg["type"] != "stream":
        # Keep order: text written before a display, a result, an error or the end goes first.
        for stream in _streams:
            stream.flush()
    msg["id"] = _current
    limit = _outputs_limit
    # Stream text is counted by the executor, which also caps each stream: here one write is
    # only kept from being larger than everything may be. Rich outputs are counted here.
    if limit and msg["type"] == "stream" and len(msg["text"]) > limit:
        msg["text"] = msg["text"][: limit + 1]  # enough to be cut and flagged downstream
    data = (json.dumps(msg, default=repr) + "\n").encode("utf-8", "replace")
    room = limit - _outputs_used if limit else None
    if room is not None and msg["type"] in ("display_data", "execute_result", "error"):
        if len(data) > room and msg["type"] == "error":
            # An error is worth keeping short: its name and the start of its value.
            msg.update(traceback=[], evalue=msg["evalue"][:1024])
            data = (json.dumps(msg, default=repr) + "\n").encode("utf-8", "replace")
        if len(data) > room:
            data = (json.dumps({"type": "truncated", "id": _current, "bytes": len(data)}) + "\n").encode()
        else:
            _outputs_used += len(data)
    with _lock:
        # The leading newline ends whatever user code may have written to fd 4 without one,
        # so the executor drops that junk and still reads this event.
        _events.write(b"\n" + data)


def _jsonable(bundle):
    """A MIME bundle with bytes (PNG, ...) as base64 text, as Jupyter sends it."""
    out = {}
    for mime, value in (bundle or {}).items():
        if isinstance(value, (bytes, bytearray)):
            value = base64.b64encode(value).decode("ascii")
        out[mime] = value
    return out


class _Stream(io.TextIOBase):
    """sys.stdout/sys.stderr of user code: every write becomes a stream event."""

    def __init__(self, name, fd):
        self.name = name
        self._fd = fd
        self._pending = ""

    @property
    def encoding(self):
        return "utf-8"

    def writable(self):
        return True

    def isatty(self):
        return False

    def fileno(self):
        # Children started with subprocess inherit the real fd, which the executor also reads.
        return self._fd

    def write(self, s):
        if not isinstance(s, str):
            raise TypeError(f"write() argument must be str, not {type(s).__name__}")
        # Whole lines go out at once (print() writes its text and its newline separately);
        # a partial line waits for its newline, a flush(), or anything else the cell emits.
        self._pending += s
        end = self._pending.rfind("\n")
        if end >= 0:
            text, self._pending = self._pending[: end + 1], self._pending[end + 1 :]
            _emit({"type": "stream", "name": self.name, "text": text})
        return len(s)

    def flush(self):
        if self._pending:
            text, self._pending = self._pending, ""
            _emit({"type": "stream", "name": self.name, "text": text})


def _error(etype, evalue, tb_lines):
    _emit({"type": "error", "ename": getattr(etype, "__name__", str(etype)), "evalue": str(evalue), "traceback": tb_lines})


def _import_ipython_lean():
    """Imports IPython without what a pipe-driven kernel never uses, which is a third of its
    start time and memory: the terminal front end (prompt_toolkit, pulled in by the package's
    `embed` import) and jedi (tab completion). Both stay importable for user code afterwards."""
    import types

    embed = types.ModuleType("IPython.terminal.embed")

    def _no_terminal(*args, **kwargs):
        raise RuntimeError("IPython.embed() needs a terminal; this kernel is driven over a pipe")

    embed.embed = _no_terminal
    blocked = {"IPython.terminal.embed": embed, "jedi": None}
    saved = {name: sys.modules.get(name) for name in blocked}
    sys.modules.update(blocked)
    try:
        import IPython.core.interactiveshell  # noqa: F401
    finally:
        if saved["jedi"] is None:
            del sys.modules["jedi"]


def _ipython_shell():
    _import_ipython_lean()
    from IPython.core.displayhook import DisplayHook
    from IPython.core.displaypub import DisplayPublisher
    from IPython.core.interactiveshell import InteractiveShell
    from traitlets.config import Config

    class Publisher(DisplayPublisher):
        def publish(self, data, metadata=None, source=None, *, transient=None, update=False, **kwargs):
            _emit({"type": "display_data", "data": _jsonable(data), "metadata": _jsonable(metadata)})

        def clear_output(self, wait=False):
            pass

    class Hook(DisplayHook):
        def start_displayhook(self):
            pass

        def write_output_prompt(self):
            pass

        def write_format_data(self, format_dict, md_dict=None):
            _emit({
                "type": "execute_result",
                "execution_count": self.prompt_count,
                "data": _jsonable(format_dict),
                "metadata": _jsonable(md_dict),
            })

        def finish_displayhook(self):
            pass

    # History in an in-memory SQLite database: %history works, with no file to create and no
    # history-saving thread (a kernel's history ends with it anyway).
    config = Config()
    config.HistoryManager.hist_file = ":memory:"
    shell = InteractiveShell.instance(
        config=config, displayhook_class=Hook, display_pub_class=Publisher, colors="NoColor"
    )
    # Tracebacks become error events (IPython routes syntax errors here too).
    shell._showtraceback = lambda etype, evalue, stb: _error(etype, evalue, stb)
    # matplotlib is not imported here (it would add ~0.4 s to every kernel start): the executor
    # sets MPLBACKEND to the inline backend, which hooks itself into this shell on first use.
    return shell


class _Plain:
    """Cells without IPython: exec, and display the value of a last expression."""

    def __init__(self):
        self.ns = {"__name__": "__main__", "__builtins__": __builtins__}
        self.count = 0

    def run(self, code):
        self.count += 1
        try:
            tree = ast.parse(code, "<cell>", "exec")
            last = None
            if tree.body and isinstance(tree.body[-1], ast.Expr):
                last = ast.Expression(tree.body.pop().value)
            exec(compile(tree, "<cell>", "exec"), self.ns)
            if last is not None:
                value = eval(compile(last, "<cell>", "eval"), self.ns)
                if value is not None:
                    self.ns["_"] = value
                    _emit({"type": "execute_result", "execution_count": self.count, "data": self._bundle(value), "metadata": {}})
            return True
        except BaseException as e:  # noqa: BLE001 - user code may raise anything, SystemExit included
            tb = traceback.format_exception(type(e), e, e.__traceback__)
            _error(type(e), e, [line for line in tb if 'File "' not in line or "<cell>" in line])
            return False

    @staticmethod
    def _bundle(value):
        bundle = {"text/plain": repr(value)}
        for mime, method in (("text/html", "_repr_html_"), ("image/png", "_repr_png_"), ("application/json", "_repr_json_")):
            try:
                rendered = getattr(value, method, None)
                if rendered is not None:
                    out = rendered()
                    if out is not None:
                        bundle[mime] = out
            except Exception:
                pass
        return _jsonable(bundle)


class _Contexts:
    """Code contexts: namespaces besides the kernel's own, each with its own variables and
    execution count; modules, files and the process are shared. A cell names its context; the
    shell (or the plain runner) is pointed at that namespace for the cell, then back."""

    def __init__(self, shell, plain):
        self.shell = shell
        self.plain = plain
        self.saved = {}  # name -> (namespace module, execution count)

    def forget(self, name):
        self.saved.pop(name, None)

    def run(self, name, cell):
        if name is None:
            return cell()
        module, count = self.saved.get(name) or (types.ModuleType("__main__"), 1)
        fresh = name not in self.saved
        if self.shell is not None:
            own = (self.shell.user_module, self.shell.user_ns, self.shell.execution_count)
            self.shell.user_module, self.shell.user_ns = module, module.__dict__
            if fresh:
                self.shell.init_user_ns()
            self.shell.execution_count = count
        else:
            own = (self.plain.ns, self.plain.count)
            if fresh:
                module.__dict__["__builtins__"] = __builtins__
            self.plain.ns, self.plain.count = module.__dict__, count - 1
        try:
            return cell()
        finally:
            if self.shell is not None:
                self.saved[name] = (module, self.shell.execution_count)
                self.shell.user_module, self.shell.user_ns, self.shell.execution_count = own
            else:
                self.saved[name] = (module, self.plain.count + 1)
                self.plain.ns, self.plain.count = own


def main():
    global _current, _outputs_limit, _outputs_used
    # Like Jupyter and `python -c`: modules import from the working directory (/workspace),
    # not from this file's directory.
    sys.path[0] = ""
    sys.stdout = _Stream("stdout", 1)
    sys.stderr = _Stream("stderr", 2)
    _streams.extend([sys.stdout, sys.stderr])
    try:
        shell = _ipython_shell()
    except ImportError:
        shell = None
    plain = None if shell is not None else _Plain()
    contexts = _Contexts(shell, plain)
    _emit({"type": "ready", "ipython": shell is not None})
    while True:
        try:
            line = _requests.readline()
        except KeyboardInterrupt:
            continue  # an interrupt that arrived between cells
        if not line:
            return
        req = json.loads(line)
        if req.get("type") != "execute":
            continue
        _current = req["id"]
        _outputs_limit, _outputs_used = req.get("outputs_limit"), 0
        # Taken: from here on, a death of this kernel is this cell's (see Kernel::exec).
        _emit({"type": "started"})
        ok = False
        try:
            if req.get("forget_context"):
                contexts.forget(req.get("context"))
                ok = True
            elif shell is not None:
                ok = contexts.run(req.get("context"), lambda: shell.run_cell(req["code"], store_history=True).success)
            else:
                ok = contexts.run(req.get("context"), lambda: plain.run(req["code"]))
        except KeyboardInterrupt as e:  # landed outside the cell's own handling
            _error(KeyboardInterrupt, e, ["KeyboardInterrupt"])
        finally:
            _emit({"type": "done", "status": "ok" if ok else "error"})
            _current = None


if __name__ == "__main__":
    main()
