"""Genesis's audit hook, loaded as ``sitecustomize`` by every Python the validation starts.

Installed in toolchain images as ``/opt/genesis/audit/sitecustomize.py``
(root-owned, read-only to the sandbox user) and put first on
``PYTHONPATH`` by the runner, so it runs before any of the change's code.
An audit hook cannot be removed once added (PEP 578).

It watches for the change's own files (``GENESIS_AUDIT_FILES``, the paths
the runner wrote) on the stack when the interpreter:

- imports the test runner's internals (``_pytest``, ``pluggy``);
- opens a file under the evidence directory (``GENESIS_OUT``) for writing,
  or removes or renames one there (``metrics.json``, the command's own
  figures, excepted);
- sends a signal to the runner (``GENESIS_AUDIT_RUNNER``).

Each finding is one ``GENESIS-AUDIT {json}`` line on a duplicate of the
original stderr taken at start-up (test runners capture fd 2 later), so it
lands in the sandbox's log, which the change can append to but not
rewrite. The orchestrator ends such an experiment as ``tampering_suspected``.
In-process tampering cannot be ruled out in principle (code that runs first
in a later process, or that closes this descriptor, escapes it); this
raises the bar, and the static scan (orchestrator/domain/tamper.py) is the
other half. Standard library only.
"""

import json
import os
import sys


def _install():
    try:
        files = frozenset(json.loads(os.environ.get("GENESIS_AUDIT_FILES") or "[]"))
    except ValueError:
        files = frozenset()
    out_dir = os.path.realpath(os.environ.get("GENESIS_OUT", "/genesis/out")) + os.sep
    runner = int(os.environ.get("GENESIS_AUDIT_RUNNER") or 0)
    try:
        fd = os.dup(2)
    except OSError:
        return
    internals = ("_pytest", "pluggy")
    state = {"busy": False, "reported": 0}

    def changed_frame():
        frame = sys._getframe(2)
        while frame is not None:
            if frame.f_code.co_filename in files:
                return "%s:%d" % (frame.f_code.co_filename, frame.f_lineno)
            frame = frame.f_back
        return None

    def report(event, detail):
        where = changed_frame()
        if where is None or state["reported"] >= 20:
            return
        state["reported"] += 1
        line = "GENESIS-AUDIT " + json.dumps({"event": event, "detail": str(detail)[:300], "at": where}) + "\n"
        try:
            os.write(fd, line.encode())
        except OSError:
            pass

    def under_out(path):
        try:
            real = os.path.realpath(os.fsdecode(path)) if isinstance(path, (str, bytes)) else ""
            return real.startswith(out_dir) and real != out_dir + "metrics.json"
        except (ValueError, OSError):
            return False

    def hook(event, args):
        if state["busy"] or not files:
            return
        state["busy"] = True
        try:
            if event == "import":
                name = args[0] or ""
                if any(name == m or name.startswith(m + ".") for m in internals):
                    report(event, name)
            elif event == "open":
                path, mode, flags = args
                writing = (isinstance(mode, str) and any(c in mode for c in "wax+")) or \
                          (isinstance(flags, int) and flags & (os.O_WRONLY | os.O_RDWR))
                if writing and under_out(path):
                    report(event, path)
            elif event in ("os.remove", "os.rename", "os.truncate", "shutil.rmtree"):
                if under_out(args[0]):
                    report(event, args[0])
            elif event in ("os.kill", "os.killpg"):
                if runner and args[0] in (runner, -runner):
                    report(event, args)
        except Exception:  # never let the hook break the code it watches
            pass
        finally:
            state["busy"] = False

    sys.addaudithook(hook)


_install()
