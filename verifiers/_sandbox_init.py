"""PID 1 of one sandbox run: run as a script by :mod:`ttc.verifiers._sandbox`, never imported.

The host starts ``unshare --pid --fork --kill-child --mount --net --ipc --uts --mount-proc``
with this file as the new PID namespace's init, as root, and writes one JSON config on
its stdin. This process then:

1. forks the payload child at once (it waits on a pipe) and moves it into the run's
   cgroups (pids, memory) while they are still writable;
2. remounts every mount of its private mount namespace read-only and nosuid, mounts a
   fresh size-limited tmpfs on ``/tmp`` (root-owned ``0755``) holding the only writable
   directory, ``/tmp/sandbox`` (owned by the run's unprivileged uid), and, when the Python
   installation sits below a directory others cannot enter (``/root``), shadows that
   directory with an empty read-only tmpfs that shows only the installation;
3. lets the child go: it sets its rlimits and ``no_new_privs``, drops to the run's uid
   and gid (no capabilities left) and execs the harness with a clean environment. The
   nonce arrives on the harness's stdin; its result file is ``/tmp/.ttc-result``, which the
   harness cannot open by name (root-owned ``0600``) and reaches only through fd 3;
4. captures the child's output up to the cap, enforces the wall-clock limit, kills every
   process of the namespace (``kill(-1)``) once the child is gone, and writes one JSON
   report on its stdout. Its exit then makes the kernel kill anything left in the namespace.
"""

from __future__ import annotations

import ctypes
import fcntl
import json
import os
import re
import resource
import select
import signal
import stat
import sys
import time

MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC = 1, 2, 4, 8
MS_REMOUNT, MS_NOATIME, MS_NODIRATIME, MS_BIND, MS_MOVE, MS_REC = 32, 1024, 2048, 4096, 8192, 16384
MS_RELATIME, MS_STRICTATIME = 1 << 21, 1 << 24
_KEEP = {"nosuid": MS_NOSUID, "nodev": MS_NODEV, "noexec": MS_NOEXEC, "noatime": MS_NOATIME,
         "nodiratime": MS_NODIRATIME, "relatime": MS_RELATIME, "strictatime": MS_STRICTATIME}
PR_SET_NO_NEW_PRIVS = 38
WORK = "/tmp/sandbox"
RESULT = "/tmp/.ttc-result"
HARNESS = ".ttc-harness.py"
_READ_CAP = 1 << 16

_libc = ctypes.CDLL(None, use_errno=True)


class SetupError(Exception):
    """Isolation could not be set up: the run is refused."""


def _mount(src: str | None, target: str, fstype: str | None, flags: int, data: str | None = None) -> None:
    enc = (lambda s: s.encode() if s is not None else None)
    if _libc.mount(enc(src), enc(target), enc(fstype), ctypes.c_ulong(flags), enc(data)) != 0:
        err = ctypes.get_errno()
        raise SetupError(f"mount {target}: {os.strerror(err)}")


def _mounts() -> list[tuple[str, str]]:
    """(mount point, per-mount options) of the mounts reachable by path in this namespace
    (a mount covered by another at the same point, or below a covered one, is not)."""
    rows = []
    with open("/proc/self/mountinfo", encoding="utf-8") as f:
        for line in f:
            fields = line.split()
            point = re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), fields[4])
            rows.append((fields[0], fields[1], point, fields[5]))
    point_of = {mid: point for mid, _, point, _ in rows}
    # A mount whose child sits at the same point is covered by it; so is everything mounted
    # inside a covered mount (except that child, which is what covers it).
    covered = {parent for _, parent, point, _ in rows if point_of.get(parent) == point}
    changed = True
    while changed:
        below = {mid for mid, parent, point, _ in rows
                 if parent in covered and point_of[parent] != point} - covered
        covered |= below
        changed = bool(below)
    return [(point, opts) for mid, _, point, opts in rows if mid not in covered]


def _read_only_everywhere() -> None:
    for point, opts in _mounts():
        flags = MS_BIND | MS_REMOUNT | MS_RDONLY | MS_NOSUID
        for opt in opts.split(","):
            flags |= _KEEP.get(opt, 0)
        _mount(None, point, None, flags)


def _shadow(path: str, n: int) -> None:
    """Makes ``path`` reachable for an unprivileged uid when a directory above it is not
    (``/root/.pyenv/...``): an empty read-only tmpfs covers that directory and shows only
    ``path`` (a read-only bind mount) at its own place."""
    parts = [p for p in path.split("/") if p]
    blocked = None
    for i in range(1, len(parts)):
        d = "/" + "/".join(parts[:i])
        if not os.stat(d).st_mode & stat.S_IXOTH:
            blocked = d
            break
    if blocked is None:
        return
    stage = f"/tmp/.ttc-stage-{n}"
    os.mkdir(stage, 0o755)
    _mount(path, stage, None, MS_BIND | MS_REC)
    _mount("tmpfs", blocked, "tmpfs", MS_NOSUID | MS_NODEV, "size=64k,nr_inodes=256,mode=0755")
    os.makedirs(path, 0o755, exist_ok=True)
    _mount(stage, path, None, MS_MOVE)
    os.rmdir(stage)
    _mount(None, blocked, None, MS_BIND | MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NODEV)


def _setup_fs(cfg: dict) -> None:
    """Read-only root nosuid everywhere; a private /tmp holding the work directory and the
    result file; the Python installation reachable."""
    _read_only_everywhere()
    _mount("tmpfs", "/tmp", "tmpfs", MS_NOSUID | MS_NODEV,
           f"size={int(cfg['disk_bytes'])},nr_inodes=4096,mode=0755")
    os.mkdir(WORK, 0o700)
    os.chown(WORK, cfg["uid"], cfg["gid"])
    for name, text in (("program.py", cfg["program"]), ("tests.py", cfg["tests"]), (HARNESS, cfg["harness"])):
        fd = os.open(os.path.join(WORK, name), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
    os.close(os.open(RESULT, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    for n, path in enumerate(cfg["expose"]):
        _shadow(path, n)
    # Refuse unless every mount but the private /tmp is read-only now.
    writable = [p for p, opts in _mounts() if "ro" not in opts.split(",") and p != "/tmp"]
    if writable:
        raise SetupError(f"mounts still writable: {', '.join(writable)}")


def _child(cfg: dict, go_r: int, nonce_r: int, out_w: int, err_w: int) -> None:
    """The payload process before exec: waits for the go, confines itself, execs the harness."""
    try:
        if os.read(go_r, 1) != b"1":
            os._exit(0)
        os.close(go_r)
        result_fd = os.open(RESULT, os.O_WRONLY)  # still root: the harness could not open it
        os.setsid()
        limits = [(resource.RLIMIT_CPU, cfg["cpu_seconds"], cfg["cpu_seconds"] + 1),
                  (resource.RLIMIT_CORE, 0, 0), (resource.RLIMIT_NOFILE, 256, 256),
                  (resource.RLIMIT_FSIZE, cfg["disk_bytes"], cfg["disk_bytes"]),
                  (resource.RLIMIT_NPROC, cfg["nproc"], cfg["nproc"]), (resource.RLIMIT_MSGQUEUE, 0, 0)]
        if cfg.get("address_space"):
            limits.append((resource.RLIMIT_AS, cfg["address_space"], cfg["address_space"]))
        for res, soft, hard in limits:
            resource.setrlimit(res, (int(soft), int(hard)))
        if _libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_SET_NO_NEW_PRIVS)")
        # fds 0-4 of the harness: nonce, output, output, result file, exec-error pipe (close-on-exec).
        high = [fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 10) for fd in (nonce_r, out_w, out_w, result_fd, err_w)]
        for target, fd in enumerate(high):
            os.dup2(fd, target, inheritable=target < 4)
        err_w = 4
        os.closerange(5, 1 << 16)
        os.setgroups([])
        os.setresgid(cfg["gid"], cfg["gid"], cfg["gid"])
        os.setresuid(cfg["uid"], cfg["uid"], cfg["uid"])
        os.chdir(WORK)
        os.umask(0o077)
        env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": WORK, "TMPDIR": WORK, "LANG": "C.UTF-8",
               "LC_ALL": "C.UTF-8"}
        os.execve(cfg["python"], [cfg["python"], "-I", HARNESS], env)
    except BaseException as exc:  # noqa: BLE001 - anything before exec is a setup failure
        try:
            os.write(err_w, f"{type(exc).__name__}: {exc}".encode()[:500])
        finally:
            os._exit(127)


def _read_result() -> str | None:
    try:
        fd = os.open(RESULT, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError:
        return None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return None
        return os.read(fd, _READ_CAP).decode("utf-8", "replace")
    finally:
        os.close(fd)


def _reap(child: int, state: dict) -> None:
    """Reaps every exited process (PID 1 inherits orphans); records the child's status."""
    while True:
        try:
            pid, status, usage = os.wait4(-1, os.WNOHANG)
        except ChildProcessError:
            state["no_children"] = True
            return
        if pid == 0:
            return
        if pid == child:
            state["status"] = status
            state["cpu"] = usage.ru_utime + usage.ru_stime


def _supervise(cfg: dict, child: int, out_r: int) -> dict:
    """Captures output and waits for the child, or kills everything at the deadline."""
    cap, kept, total = int(cfg["output_bytes"]), bytearray(), 0
    state: dict = {}
    start = time.monotonic()
    deadline = start + float(cfg["timeout"])
    timed_out = False
    open_out = True
    while "status" not in state:
        now = time.monotonic()
        if now >= deadline:
            timed_out = True
            break
        if open_out:
            ready, _, _ = select.select([out_r], [], [], min(0.02, deadline - now))
            if ready:
                chunk = os.read(out_r, 1 << 16)
                if not chunk:
                    open_out = False
                total += len(chunk)
                kept += chunk[: max(0, cap - len(kept))]
        else:
            time.sleep(min(0.01, deadline - now))
        _reap(child, state)
    wall = time.monotonic() - start
    # Everything else in the namespace goes now (orphans, setsid'd daemons, a fork bomb).
    for _ in range(200):
        try:
            os.kill(-1, signal.SIGKILL)
        except ProcessLookupError:
            pass
        _reap(child, state)
        if state.get("no_children"):
            break
        time.sleep(0.005)
    os.set_blocking(out_r, False)
    while open_out:
        try:
            chunk = os.read(out_r, 1 << 16)
        except BlockingIOError:
            break
        if not chunk:
            break
        total += len(chunk)
        kept += chunk[: max(0, cap - len(kept))]
    status = state.get("status")
    return {"ok": True, "timed_out": timed_out, "wall": wall, "cpu": state.get("cpu"),
            "exit": os.waitstatus_to_exitcode(status) if status is not None else None,
            "output": kept.decode("utf-8", "replace"), "output_bytes": total, "truncated": total > len(kept),
            "result": _read_result()}


def main() -> None:
    out = sys.stdout
    try:
        cfg = json.loads(sys.stdin.read())
        go_r, go_w = os.pipe()
        nonce_r, nonce_w = os.pipe()
        out_r, out_w = os.pipe()
        err_r, err_w = os.pipe2(os.O_CLOEXEC)
        child = os.fork()
        if child == 0:
            os.close(go_w)
            os.close(nonce_w)
            os.close(out_r)
            os.close(err_r)
            _child(cfg, go_r, nonce_r, out_w, err_w)
        for fd in (go_r, nonce_r, out_w, err_w):
            os.close(fd)
        try:
            for procs in cfg["cgroup_procs"]:
                with open(procs, "w") as f:
                    f.write(str(child))
            _setup_fs(cfg)
        except (OSError, SetupError) as exc:
            os.kill(child, signal.SIGKILL)
            raise SetupError(str(exc)) from None
        os.write(go_w, b"1")
        os.close(go_w)
        os.write(nonce_w, (cfg["nonce"] + "\n").encode())
        os.close(nonce_w)
        ready, _, _ = select.select([err_r], [], [], 30)
        failure = os.read(err_r, 1000) if ready else b"the child neither started the harness nor failed"
        if failure:
            os.kill(child, signal.SIGKILL)
            raise SetupError(f"cannot start the harness: {failure.decode('utf-8', 'replace')}")
        report = _supervise(cfg, child, out_r)
    except SetupError as exc:
        report = {"ok": False, "error": str(exc)}
    out.write(json.dumps(report))
    out.flush()


if __name__ == "__main__":
    main()
