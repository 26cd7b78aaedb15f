"""Runs untrusted Python against tests in isolation (Linux, as root); see :func:`run_sandboxed`.

One run::

    host (this module)                      new PID, mount, net, IPC, UTS namespaces
    ------------------                      ----------------------------------------
    cgroups pids + memory (v1) ---------->  init (_sandbox_init.py, PID 1, root)
    unshare ... python init.py  <-- JSON --   read-only mounts, private /tmp, fork:
      config on stdin (nonce, code)           harness (_sandbox_harness.py) as a fresh
      report on stdout                        unprivileged uid, no capabilities, clean env

Limits: wall clock (the init, with the host as a backstop), CPU time (``RLIMIT_CPU``),
memory (the memory cgroup; ``RLIMIT_AS`` where it cannot be made), processes and threads
(the pids cgroup, and ``RLIMIT_NPROC``, which binds because the uid is unprivileged and
unique to the run), disk (a size-limited tmpfs), open files, output (capped by the init).
No network: the network namespace has only a loopback device, and it is down. The only
writable directory is ``/tmp/sandbox`` in a tmpfs that vanishes with the run. Every process
is gone when the verdict returns: the init kills the namespace's processes, its exit makes
the kernel kill any left, and the host empties and removes the cgroups.

The verdict comes from the result the harness writes with the run's nonce, never from an
exit code; see ``_sandbox_harness.py`` for what the nonce stops (exit tricks) and what it
cannot (in-process forgery). When isolation cannot be set up (not root, no ``unshare``,
namespaces or mounts refused) the run is refused with :class:`SandboxUnavailableError`:
nothing ever runs unconfined.
"""

from __future__ import annotations

import hmac
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal

from ttc.backends.errors import BadInputError, RunFailure

__all__ = ["SandboxError", "SandboxLimits", "SandboxResult", "SandboxUnavailableError", "Status",
           "run_sandboxed"]

Status = Literal["passed", "failed", "timeout", "crashed", "limit_exceeded"]

_HERE = Path(__file__).resolve().parent
_INIT = _HERE / "_sandbox_init.py"
_HARNESS = _HERE / "_sandbox_harness.py"
_STARTUP_GRACE = 15.0  # host backstop beyond the run's own wall-clock limit
_MIB = 1 << 20


class SandboxError(RunFailure):
    """The sandbox itself failed (not the candidate): exit 1 on the CLI."""


class SandboxUnavailableError(SandboxError):
    """Isolation cannot be set up here, so nothing was run."""


@dataclass(frozen=True)
class SandboxLimits:
    """Limits of one run.

    Attributes:
        timeout: Wall-clock seconds from the harness's start.
        cpu_seconds: CPU seconds of each process (None: ``timeout``).
        memory_bytes: Memory of all the run's processes together (page cache and tmpfs included).
        max_processes: Processes and threads at once, the harness included.
        output_bytes: stdout and stderr kept (together); the rest is read and dropped.
        disk_bytes: Size of the private tmpfs, and the largest file the run may write.
    """

    timeout: float = 10.0
    cpu_seconds: float | None = None
    memory_bytes: int = 512 * _MIB
    max_processes: int = 64
    output_bytes: int = 64 * 1024
    disk_bytes: int = 64 * _MIB

    def __post_init__(self) -> None:
        if not (isinstance(self.timeout, (int, float)) and 0 < self.timeout <= 3600):
            raise BadInputError(f"timeout must be in (0, 3600] seconds, got {self.timeout!r}")
        for name in ("memory_bytes", "max_processes", "output_bytes", "disk_bytes"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise BadInputError(f"{name} must be a positive integer, got {value!r}")
        if self.memory_bytes < 32 * _MIB:
            raise BadInputError(f"memory_bytes must be at least 32 MiB, got {self.memory_bytes}")
        if self.max_processes < 2:
            raise BadInputError(f"max_processes must be at least 2, got {self.max_processes}")


@dataclass
class SandboxResult:
    """The verdict on one run.

    Attributes:
        status: passed, failed (an exception, ``sys.exit`` included), timeout (wall clock or
            CPU time), crashed (no valid result: killed, ``os._exit``, a forged result) or
            limit_exceeded (memory or processes).
        reason: One line a person can read.
        output: stdout and stderr together, at most ``output_bytes`` of them.
        output_truncated: More output was written than kept.
        wall_seconds: How long the harness ran.
        error_type: The exception that failed the run, if any.
        isolation: Which mechanism enforced the memory and process limits (cgroup or rlimit).
    """

    status: Status
    reason: str
    output: str = ""
    output_truncated: bool = False
    wall_seconds: float = 0.0
    error_type: str | None = None
    isolation: dict = field(default_factory=dict)

    @property
    def passed(self) -> bool:
        return self.status == "passed"

    def to_dict(self) -> dict:
        return {"passed": self.passed, **asdict(self)}


def _python() -> tuple[str, str]:
    """The interpreter the harness runs on (the base one, not a venv) and its prefix."""
    exe = os.path.realpath(getattr(sys, "_base_executable", None) or sys.executable)
    return exe, os.path.realpath(sys.base_prefix)


# ------------------------------------------------------------------------------- cgroups v1


def _cgroup_dir(controller: str) -> str | None:
    """This process's own cgroup directory of a v1 ``controller``, or None."""
    root = None
    try:
        with open("/proc/self/mountinfo", encoding="utf-8") as f:
            for line in f:
                pre, _, post = line.partition(" - ")
                fs = post.split()
                if len(fs) >= 3 and fs[0] == "cgroup" and controller in fs[2].split(","):
                    root = pre.split()[4]
                    break
        with open("/proc/self/cgroup", encoding="utf-8") as f:
            for line in f:
                _, ctls, path = line.rstrip("\n").split(":", 2)
                if controller in ctls.split(",") and root:
                    return os.path.join(root, path.lstrip("/"))
    except (OSError, IndexError, ValueError):
        pass
    return None


class _Cgroups:
    """The run's own pids and memory cgroups, where they can be made."""

    def __init__(self, name: str, limits: SandboxLimits):
        self.dirs: dict[str, str] = {}
        wanted = {"pids": [("pids.max", limits.max_processes)],
                  "memory": [("memory.limit_in_bytes", limits.memory_bytes),
                             ("memory.memsw.limit_in_bytes", limits.memory_bytes)]}
        for controller, settings in wanted.items():
            parent = _cgroup_dir(controller)
            if not parent or not os.path.isdir(parent):
                continue
            path = os.path.join(parent, name)
            try:
                os.mkdir(path)
            except OSError:
                continue
            self.dirs[controller] = path
            try:
                for fname, value in settings:
                    target = os.path.join(path, fname)
                    if os.path.exists(target) or fname != "memory.memsw.limit_in_bytes":
                        Path(target).write_text(str(value))
            except OSError:
                self._remove(controller)

    def procs(self) -> list[str]:
        return [os.path.join(p, "cgroup.procs") for p in self.dirs.values()]

    def _read(self, controller: str, fname: str) -> str:
        try:
            return Path(self.dirs[controller], fname).read_text()
        except (KeyError, OSError):
            return ""

    def oom_kills(self) -> int:
        for line in self._read("memory", "memory.oom_control").splitlines():
            if line.startswith("oom_kill "):
                return int(line.split()[1])
        return 0

    def pids_limit_hit(self) -> bool:
        for line in self._read("pids", "pids.events").splitlines():
            if line.startswith("max "):
                return int(line.split()[1]) > 0
        return False

    def _remove(self, controller: str) -> None:
        path = self.dirs.pop(controller)
        for _ in range(200):
            try:
                pids = [int(x) for x in Path(path, "cgroup.procs").read_text().split()]
            except OSError:
                pids = []
            for pid in pids:
                try:
                    os.kill(pid, signal.SIGKILL)
                except OSError:
                    pass
            try:
                os.rmdir(path)
                return
            except FileNotFoundError:
                return
            except OSError:
                time.sleep(0.01)

    def close(self) -> None:
        for controller in list(self.dirs):
            self._remove(controller)


# ---------------------------------------------------------------------------------- a run


def _preflight() -> str:
    if not sys.platform.startswith("linux"):
        raise SandboxUnavailableError("the code sandbox needs Linux namespaces; refusing to run code unconfined")
    if os.geteuid() != 0:
        raise SandboxUnavailableError("the code sandbox needs root (it sets up namespaces, mounts and an "
                                      "unprivileged uid); refusing to run code unconfined")
    unshare = shutil.which("unshare", path="/usr/bin:/bin:/usr/sbin:/sbin")
    if not unshare:
        raise SandboxUnavailableError("`unshare` (util-linux) is not installed; refusing to run code unconfined")
    return unshare


def _verdict(report: dict, nonce: str, limits: SandboxLimits, cgroups: _Cgroups) -> tuple[Status, str, str | None]:
    """Status, reason and error type from the init's report, the result file and the cgroups."""
    result = None
    try:
        parsed = json.loads(report.get("result") or "null")
        if isinstance(parsed, dict) and isinstance(parsed.get("nonce"), str):
            result = parsed
    except (ValueError, RecursionError):
        pass
    genuine = result is not None and hmac.compare_digest(result["nonce"].encode(), nonce.encode()) and \
        result.get("status") in ("passed", "failed")
    error_type = result.get("error_type") if genuine and isinstance(result.get("error_type"), str) else None
    exit_code, cpu = report.get("exit"), report.get("cpu") or 0.0
    cpu_limit = limits.cpu_seconds or limits.timeout
    if genuine and result["status"] == "passed" and not report.get("timed_out"):
        return "passed", str(result.get("reason") or "passed"), None
    if cgroups.oom_kills() or error_type == "MemoryError":
        return "limit_exceeded", f"memory limit of {limits.memory_bytes // _MIB} MiB exceeded", error_type
    if cgroups.pids_limit_hit():
        return "limit_exceeded", f"process limit of {limits.max_processes} reached", error_type
    if report.get("timed_out"):
        return "timeout", f"wall-clock limit of {limits.timeout:g} s exceeded", error_type
    if exit_code == -signal.SIGXCPU or (exit_code == -signal.SIGKILL and cpu >= cpu_limit - 0.05):
        return "timeout", f"CPU-time limit of {cpu_limit:g} s exceeded", error_type
    if genuine:
        return "failed", str(result.get("reason") or "failed")[:500], error_type
    if result is not None:
        return "crashed", "the result carries a wrong nonce (forged): not counted", None
    if exit_code is not None and exit_code < 0:
        name = signal.Signals(-exit_code).name if -exit_code in signal.valid_signals() else str(-exit_code)
        return "crashed", f"killed by {name} before the tests finished", None
    return "crashed", f"exited with code {exit_code} before the tests finished (no result from the harness)", None


def run_sandboxed(program: str, tests: str, limits: SandboxLimits | None = None) -> SandboxResult:
    """Runs ``program`` and then ``tests`` as one Python script in the sandbox.

    Args:
        program: The candidate code (untrusted).
        tests: Code run after it in the same namespace (asserts, a ``check`` call).
        limits: Limits of the run (defaults: 10 s, 512 MiB, 64 processes, 64 KiB output).

    Returns:
        The verdict; ``passed`` means the whole script ran to its end.

    Raises:
        SandboxUnavailableError: Isolation cannot be set up here; nothing was run.
        SandboxError: The sandbox failed otherwise (its init crashed).
    """
    limits = limits or SandboxLimits()
    if not isinstance(program, str) or not isinstance(tests, str):
        raise BadInputError("program and tests must be text")
    try:
        program.encode("utf-8"), tests.encode("utf-8")
    except UnicodeEncodeError:
        raise BadInputError("program and tests must be valid UTF-8 text (lone surrogates found)") from None
    unshare = _preflight()
    python, prefix = _python()
    nonce = secrets.token_hex(16)
    uid = 100_000 + secrets.randbelow(900_000)  # unprivileged and unique to the run (RLIMIT_NPROC binds)
    cgroups = _Cgroups(f"ttc-sandbox-{nonce[:16]}", limits)
    isolation = {"pids": "cgroup" if "pids" in cgroups.dirs else "rlimit",
                 "memory": "cgroup" if "memory" in cgroups.dirs else "rlimit"}
    cfg = {
        "nonce": nonce, "uid": uid, "gid": uid, "python": python, "expose": [prefix],
        "program": program, "tests": tests, "harness": _HARNESS.read_text(encoding="utf-8"),
        "timeout": limits.timeout, "cpu_seconds": max(1, round(limits.cpu_seconds or limits.timeout)),
        "nproc": limits.max_processes + (8 if "pids" in cgroups.dirs else 0),
        "address_space": None if "memory" in cgroups.dirs else limits.memory_bytes,
        "output_bytes": limits.output_bytes, "disk_bytes": limits.disk_bytes, "cgroup_procs": cgroups.procs(),
    }
    cmd = [unshare, "--pid", "--fork", "--kill-child", "--mount", "--net", "--ipc", "--uts", "--mount-proc",
           "--propagation", "private", "--", os.path.realpath(sys.executable), "-I", "-S", str(_INIT)]
    try:
        try:
            proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                    cwd="/", env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8"},
                                    start_new_session=True)
        except OSError as exc:
            raise SandboxUnavailableError(f"cannot start unshare: {exc}") from None
        try:
            out, err = proc.communicate(json.dumps(cfg).encode(), timeout=limits.timeout + _STARTUP_GRACE)
        except subprocess.TimeoutExpired:
            proc.kill()  # --kill-child takes the init, and with it the whole namespace
            cgroups.close()
            try:
                proc.communicate(timeout=5)
            except subprocess.TimeoutExpired:
                pass
            return SandboxResult("timeout", f"wall-clock limit of {limits.timeout:g} s exceeded (host backstop)",
                                 wall_seconds=limits.timeout, isolation=isolation)
        except BaseException:  # KeyboardInterrupt, SIGTERM's exception: the run goes with the caller
            proc.kill()
            proc.wait()
            raise
        try:
            report = json.loads(out.decode("utf-8", "replace") or "null")
        except ValueError:
            report = None
        stderr_tail = err.decode("utf-8", "replace").strip().splitlines()[-1:] or [f"exit status {proc.returncode}"]
        if not isinstance(report, dict):
            if stderr_tail[0].startswith("unshare"):
                raise SandboxUnavailableError(f"isolation unavailable: {stderr_tail[0]}")
            raise SandboxError(f"the sandbox init failed: {stderr_tail[0]}")
        if not report.get("ok"):
            raise SandboxUnavailableError(f"isolation unavailable: {report.get('error', 'unknown error')}")
        status, reason, error_type = _verdict(report, nonce, limits, cgroups)
        return SandboxResult(status, reason, output=report.get("output", ""),
                             output_truncated=bool(report.get("truncated")), wall_seconds=round(report["wall"], 3),
                             error_type=error_type, isolation=isolation)
    finally:
        cgroups.close()
