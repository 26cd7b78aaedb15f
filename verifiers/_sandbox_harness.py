"""The test harness of one sandbox run: the init copies this file into the work directory
and the unprivileged payload process runs it (``python -I``); never imported by ttc.

It reads the run's nonce from stdin (a pipe, so the nonce is never on disk, in argv or in
the environment), points stdin at /dev/null, runs ``program.py`` and then ``tests.py`` in
one namespace as one script, and writes ``{"nonce", "status", "reason", "error_type"}`` to
fd 3, the result file it cannot open by name. Then it ends with ``os._exit`` so that
threads, atexit hooks and finalizers the candidate left cannot change the outcome.

What the nonce buys: an exit from inside the candidate (``os._exit(0)``, ``sys.exit`` in the
tests, a signal) leaves no result, so it cannot pass. What it does not: code running in this
very process can read the nonce from the harness's memory, or fake results without it (an
object whose ``__eq__`` is always true passes ``assert f(x) == y``). Executing tests in
the candidate's own process cannot rule out in-process forgery.
"""

import os
import sys


def _describe(exc: BaseException) -> str:
    try:
        import traceback

        where = ""
        for frame in traceback.extract_tb(exc.__traceback__):
            if frame.filename in ("program.py", "tests.py"):
                where = f" ({frame.filename} line {frame.lineno})"
        text = "".join(traceback.format_exception_only(type(exc), exc)).strip().splitlines()
        return ((text[-1] if text else type(exc).__name__) + where)[:500]
    except BaseException:  # noqa: BLE001 - a hostile __str__ must not stop the report
        return type(exc).__name__


def _main() -> None:
    pid, getpid, exit_, pwrite, ftruncate = os.getpid(), os.getpid, os._exit, os.pwrite, os.ftruncate
    nonce = sys.stdin.readline().strip()
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.close(null)
    import json

    dumps = json.dumps
    try:
        sys.stdout.reconfigure(line_buffering=True, errors="backslashreplace")
        sys.stderr.reconfigure(errors="backslashreplace")
    except (AttributeError, ValueError):
        pass
    with open("program.py", encoding="utf-8") as f:
        program = f.read()
    with open("tests.py", encoding="utf-8") as f:
        tests = f.read()
    status, reason, error_type = "passed", "the program and its tests ran to the end", None
    namespace = {"__name__": "__main__", "__builtins__": __builtins__}
    try:
        exec(compile(program, "program.py", "exec"), namespace)  # noqa: S102 - running it is the point
        exec(compile(tests, "tests.py", "exec"), namespace)  # noqa: S102
    except BaseException as exc:  # noqa: BLE001 - SystemExit and KeyboardInterrupt fail the run too
        status, error_type, reason = "failed", type(exc).__name__, _describe(exc)
        try:
            import traceback

            traceback.print_exception(type(exc), exc, exc.__traceback__.tb_next)  # not the harness's frame
        except BaseException:  # noqa: BLE001, S110 - a broken stream must not stop the report
            pass
    if getpid() != pid:
        exit_(0)  # a forked copy of this process that reached the end does not report
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except BaseException:  # noqa: BLE001, S110 - a broken stream must not stop the report
            pass
    data = dumps({"nonce": nonce, "status": status, "reason": reason, "error_type": error_type}).encode()
    ftruncate(3, 0)
    pwrite(3, data, 0)
    exit_(0)


if __name__ == "__main__":
    _main()
