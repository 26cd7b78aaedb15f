"""The code sandbox against hostile programs: each test runs real code in real isolation.

Every hostile program first checks that it runs confined (unprivileged uid, its own PID
namespace) and fails loudly otherwise, so a broken sandbox fails these tests instead of
harming the machine.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from ttc.verifiers import _sandbox
from ttc.verifiers.code import (
    CodeVerifier,
    SandboxLimits,
    SandboxUnavailableError,
    extract_code,
    normalize_code,
    run_code_tests,
)

ROOT = Path(__file__).resolve().parents[1]

# Refuses to go on unless it runs as the sandbox's unprivileged uid in its own PID namespace.
CONFINED = """
import os
assert os.getuid() >= 100000 and os.getgid() >= 100000, "not running as the sandbox's uid"
assert os.getppid() == 1 and len([p for p in os.listdir("/proc") if p.isdigit()]) < 10, "not in a PID namespace"
"""


def run(program: str, tests: str = "", **limits) -> _sandbox.SandboxResult:
    return run_code_tests(CONFINED + program, tests, limits=SandboxLimits(**{"timeout": 10.0, **limits}))


def _host_pids_of_uid(uid: int) -> list[int]:
    pids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                status = Path(f"/proc/{entry}/status").read_text()
            except OSError:
                continue
            line = next((ln for ln in status.splitlines() if ln.startswith("Uid:")), "")
            if line.split()[1:2] == [str(uid)]:
                pids.append(int(entry))
    return pids


def _host_cmdlines_with(marker: str) -> list[str]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                cmd = Path(f"/proc/{entry}/cmdline").read_bytes().replace(b"\0", b" ").decode("utf-8", "replace")
            except OSError:
                continue
            if marker in cmd:
                found.append(cmd)
    return found


def test_a_correct_program_passes_and_a_wrong_one_fails():
    ok = run("def add(a, b):\n    return a + b\nprint('hello')\n", "assert add(2, 3) == 5\n")
    assert ok.status == "passed" and ok.passed and ok.output == "hello\n"
    assert ok.isolation == {"pids": "cgroup", "memory": "cgroup"}
    bad = run("def add(a, b):\n    return a - b\n", "assert add(2, 3) == 5, 'add is wrong'\n")
    assert bad.status == "failed" and not bad.passed
    assert "AssertionError: add is wrong (tests.py line 1)" in bad.reason and bad.error_type == "AssertionError"
    syntax = run("def add(a, b) return a\n")
    assert syntax.status == "failed" and syntax.error_type == "SyntaxError"


def test_the_tests_run_after_the_program_in_one_namespace():
    r = run("SECRET_VALUE = 41\ndef bump():\n    global SECRET_VALUE\n    SECRET_VALUE += 1\n",
            "bump()\nassert SECRET_VALUE == 42\nassert __name__ == '__main__'\n")
    assert r.status == "passed", r


def test_exit_tricks_never_pass():
    early = run("import os\nos._exit(0)\n", "assert True\n")
    assert early.status == "crashed" and "no result" in early.reason
    in_tests = run("x = 1\n", "import sys\nsys.exit(0)\n")
    assert in_tests.status == "failed" and in_tests.error_type == "SystemExit"
    killed = run("import os, signal\nos.kill(os.getpid(), signal.SIGKILL)\n")
    assert killed.status == "crashed" and "SIGKILL" in killed.reason
    # A child that exits 0 at once, while its parent runs the (failing) tests.
    child = run("import os\nif os.fork() == 0:\n    os._exit(0)\n", "assert 1 == 2\n")
    assert child.status == "failed"


def test_a_forged_result_without_the_nonce_is_not_counted():
    forged = run(
        "import os, json\n"
        "try:\n    open('/tmp/.ttc-result', 'w')\nexcept PermissionError:\n    print('result file closed to me')\n"
        "os.pwrite(3, json.dumps({'nonce': 'guess', 'status': 'passed'}).encode(), 0)\nos._exit(0)\n")
    assert forged.status == "crashed" and "nonce" in forged.reason
    assert "result file closed to me" in forged.output


def test_in_process_forgery_is_a_documented_limit():
    """The nonce stops exit tricks, not an object that equals everything (see _sandbox_harness)."""
    r = run("class Anything:\n    def __eq__(self, other):\n        return True\n"
            "def solve(x):\n    return Anything()\n", "assert solve(1) == 2\nassert solve(2) == 'three'\n")
    assert r.status == "passed"


def test_an_endless_loop_times_out_and_cpu_time_is_capped():
    start = time.monotonic()
    spin = run("while True:\n    pass\n", timeout=2.0)
    assert spin.status == "timeout" and "limit of 2 s" in spin.reason  # CPU time and wall clock run out together
    sleeper = run("import time\ntime.sleep(100)\n", timeout=1.0)
    assert sleeper.status == "timeout" and "wall-clock" in sleeper.reason
    assert time.monotonic() - start < 15
    cpu = run("while True:\n    pass\n", timeout=20.0, cpu_seconds=1)
    assert cpu.status == "timeout" and "CPU-time" in cpu.reason and cpu.wall_seconds < 15


def test_a_memory_hog_exceeds_its_limit():
    r = run("blocks = []\nwhile True:\n    blocks.append(bytearray(16 * 2**20))\n", memory_bytes=128 * 2**20)
    assert r.status == "limit_exceeded" and "memory" in r.reason


def test_a_fork_bomb_is_contained_and_gone_afterwards():
    before = len([p for p in os.listdir("/proc") if p.isdigit()])
    r = run("import os, sys\nprint(os.getuid(), flush=True)\n"
            "while True:\n    try:\n        os.fork()\n    except OSError:\n        pass\n",
            timeout=3.0, max_processes=32)
    assert r.status == "limit_exceeded" and "process limit of 32" in r.reason
    uid = int(r.output.split()[0])
    assert _host_pids_of_uid(uid) == []
    assert len([p for p in os.listdir("/proc") if p.isdigit()]) < before + 20


def test_no_network_not_even_the_hosts_loopback():
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    server.settimeout(0.5)
    port = server.getsockname()[1]
    try:
        r = run(f"""
import socket
print(socket.if_nameindex())
refused = []
for addr in [("127.0.0.1", {port}), ("1.1.1.1", 53), ("8.8.8.8", 443)]:
    try:
        socket.create_connection(addr, timeout=2).close()
    except OSError:
        refused.append(addr)
""", "assert len(refused) == 3, refused\n")
        assert r.status == "passed", r
        assert "'lo'" in r.output
        with pytest.raises(socket.timeout):
            server.accept()
    finally:
        server.close()


def test_no_writes_outside_its_own_directory():
    mark = uuid.uuid4().hex
    host_file = Path("/tmp") / f"ttc-host-visible-{mark}"
    host_file.write_text("host")
    targets = [f"/tmp/ttc-escape-{mark}", f"/var/tmp/ttc-escape-{mark}", f"/dev/shm/ttc-escape-{mark}",
               f"{ROOT}/ttc-escape-{mark}", f"/ttc-escape-{mark}", f"/etc/ttc-escape-{mark}"]
    try:
        r = run(f"""
import os
targets = {targets!r}
blocked = []
for path in targets:
    try:
        with open(path, "w") as f:
            f.write("escaped")
    except OSError:
        blocked.append(path)
for path in ["{ROOT}/pyproject.toml"]:
    try:
        os.chmod(path, 0o777)
    except OSError:
        blocked.append(path)
with open("mine.txt", "w") as f:
    f.write("mine")
""", f"""
assert blocked == targets + ["{ROOT}/pyproject.toml"], blocked
assert open("mine.txt").read() == "mine" and os.getcwd() == "/tmp/sandbox"
assert not os.path.exists("{host_file}"), "the host's /tmp is visible"
""")
        assert r.status == "passed", r
        assert not any(Path(t).exists() for t in targets)
        assert (ROOT / "pyproject.toml").stat().st_mode & 0o777 != 0o777
    finally:
        host_file.unlink()


def test_the_environment_is_clean(monkeypatch):
    secret = f"ttc-secret-{uuid.uuid4().hex}"
    monkeypatch.setenv("TTC_SANDBOX_TEST_SECRET", secret)
    r = run("""
import os
blobs = list(os.environ.values())
for pid in os.listdir("/proc"):
    if pid.isdigit():
        for name in ("environ", "cmdline"):
            try:
                blobs.append(open(f"/proc/{pid}/{name}", "rb").read().decode("utf-8", "replace"))
            except OSError:
                pass
""", f"assert not any({secret!r} in b for b in blobs)\n"
     "assert set(os.environ) <= {'PATH', 'HOME', 'TMPDIR', 'LANG', 'LC_ALL'}, sorted(os.environ)\n")
    assert r.status == "passed", r


def test_huge_output_is_capped():
    r = run("import sys\nline = 'x' * 1023 + '\\n'\nfor _ in range(20000):\n    sys.stdout.write(line)\n",
            output_bytes=4096)
    assert r.status == "passed" and r.output_truncated and len(r.output.encode()) == 4096


def test_orphans_that_detach_are_gone_when_the_verdict_returns():
    marker = f"1000.{uuid.uuid4().int % 10**9}"
    r = run(f"""
import os, subprocess, time
if os.fork() == 0:  # a daemon: double fork, new session, the parent gone
    os.setsid()
    if os.fork() == 0:
        subprocess.Popen(["sleep", "{marker}"], start_new_session=True)
        time.sleep(60)
    os._exit(0)
subprocess.Popen(["sleep", "{marker}"], start_new_session=True)
time.sleep(0.5)
print(len([p for p in os.listdir("/proc") if p.isdigit()]), "processes")
""", "assert True\n")
    assert r.status == "passed", r
    assert int(r.output.split()[0]) >= 4  # the daemons were running
    assert _host_cmdlines_with(marker) == []


def test_signals_reach_neither_the_init_nor_the_host():
    keeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        parent = run("import os, signal\ntry:\n    os.kill(os.getppid(), signal.SIGKILL)\n    hit = True\n"
                     "except PermissionError:\n    hit = False\n", "assert hit is False\n")
        assert parent.status == "passed", parent
        # A child that kills its parent (the harness): a crash, not a pass.
        child = run("import os, signal, time\nif os.fork() == 0:\n    os.kill(os.getppid(), signal.SIGKILL)\n"
                    "    os._exit(0)\ntime.sleep(5)\n")
        assert child.status == "crashed" and "SIGKILL" in child.reason
        # kill(-1) reaches every process of the sandbox's uid in its namespace, and no further.
        everyone = run("import os, signal, subprocess\nchild = subprocess.Popen(['sleep', '30'])\n"
                       "os.kill(-1, signal.SIGKILL)\n", "assert child.wait() == -signal.SIGKILL\n")
        assert everyone.status == "passed", everyone
        assert keeper.poll() is None  # kill(-1) in the sandbox did not reach the host
    finally:
        keeper.kill()
        keeper.wait()


def test_limits_fall_back_to_rlimits_without_cgroups(monkeypatch):
    monkeypatch.setattr(_sandbox, "_cgroup_dir", lambda controller: None)
    hog = run("x = bytearray(1024 * 2**20)\n", memory_bytes=256 * 2**20)
    assert hog.isolation == {"pids": "rlimit", "memory": "rlimit"}
    assert hog.status == "limit_exceeded" and "memory" in hog.reason
    bomb = run("import os\nprint(os.getuid(), flush=True)\nwhile True:\n    os.fork()\n", max_processes=16)
    assert bomb.status == "failed" and bomb.error_type == "BlockingIOError"
    assert _host_pids_of_uid(int(bomb.output.split()[0])) == []


def test_cgroups_are_removed_after_each_run(monkeypatch):
    made: list[str] = []
    original = _sandbox._Cgroups.__init__

    def recording(self, name, limits):
        original(self, name, limits)
        made.extend(self.dirs.values())

    monkeypatch.setattr(_sandbox._Cgroups, "__init__", recording)
    assert run("print(1)\n").passed
    assert run("import os\nwhile True:\n    os.fork()\n", max_processes=8).status == "limit_exceeded"
    assert len(made) == 4 and not any(os.path.exists(d) for d in made)


def test_it_refuses_rather_than_run_unconfined(monkeypatch):
    """Missing root, a missing unshare, and a failure inside the sandbox's own set-up all
    refuse with a typed error; none runs the code anyway or returns a verdict."""
    with monkeypatch.context() as m:
        m.setattr(_sandbox.os, "geteuid", lambda: 1000)
        with pytest.raises(SandboxUnavailableError, match="needs root"):
            run_code_tests("print(1)", "")
    with monkeypatch.context() as m:
        m.setattr(_sandbox.shutil, "which", lambda *a, **k: None)
        with pytest.raises(SandboxUnavailableError, match="unshare"):
            run_code_tests("print(1)", "")
    with monkeypatch.context() as m:  # the interpreter cannot start inside: refused, not a "crashed" verdict
        m.setattr(_sandbox, "_python", lambda: ("/nonexistent/python3", sys.base_prefix))
        with pytest.raises(SandboxUnavailableError, match="cannot start the harness"):
            run_code_tests("print(1)", "")
    with monkeypatch.context() as m:  # the init cannot set up the mounts it needs
        m.setattr(_sandbox, "_python", lambda: (os.path.realpath(sys.executable), "/nonexistent/prefix"))
        with pytest.raises(SandboxUnavailableError, match="isolation unavailable"):
            run_code_tests("print(1)", "")


def test_code_verifier_contract():
    v = CodeVerifier(SandboxLimits(timeout=5))
    problem = {"id": "sq", "tests": "assert square(3) == 9\n"}
    reply = "Here you go:\n```python\ndef square(x):\n    return x * x\n```\nDone."
    verdict = v.verify(problem, reply)
    assert verdict.correct is True and verdict.score == 1.0 and verdict.reason.startswith("passed")
    wrong = v.verify(problem, "def square(x):\n    return x + x\n")
    assert wrong.correct is False and wrong.reason.startswith("failed")
    same = v.canonical(problem, "def square(x):  # comment\n    return x*x\n")
    assert same == v.canonical(problem, reply) and same.startswith("code:")
    assert v.canonical(problem, "def (") is None
    assert extract_code("```py\na = 1\n```\n```python\nb = 2\n```") == "b = 2\n"
    assert extract_code("no fences") == "no fences" and normalize_code("x=1") == "x = 1"


def _ttc(capsys, *args: str) -> tuple[int, str, str]:
    """Runs the CLI in-process; returns (exit code, stdout, stderr)."""
    from ttc.orchestrator.cli import main

    with pytest.raises(SystemExit) as exc:
        main(list(args))
    out, err = capsys.readouterr()
    return exc.value.code, out, err


def test_cli_verify_code(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(ROOT)
    code, out, err = _ttc(capsys, "verify", "code", "examples/program.py", "--tests", "examples/tests.py", "--json")
    assert code == 0, err
    data = json.loads(out)
    assert data["passed"] is True and data["correct"] is True and data["status"] == "passed"
    assert data["reason"] and data["output"] == "all fizzbuzz tests passed\n"
    (tmp_path / "bad.py").write_text("def fizzbuzz(n):\n    return str(n)\n")
    code, out, _ = _ttc(capsys, "verify", "code", str(tmp_path / "bad.py"), "--tests", "examples/tests.py", "--json")
    assert code == 0 and json.loads(out)["status"] == "failed" and json.loads(out)["passed"] is False
    (tmp_path / "loop.py").write_text("while True:\n    pass\n")
    code, out, _ = _ttc(capsys, "verify", "code", str(tmp_path / "loop.py"), "--tests", "examples/tests.py",
                        "--timeout", "1", "--json")
    assert code == 0 and json.loads(out)["status"] == "timeout"
    code, out, _ = _ttc(capsys, "verify", "code", "examples/program.py", "--tests", "examples/tests.py")
    assert code == 0 and out.startswith("passed")


@pytest.mark.parametrize("args, message", [
    (["missing.py", "--tests", "examples/tests.py"], "cannot read program file"),
    (["examples/program.py", "--tests", "nope/tests.py"], "cannot read tests file"),
    (["NONUTF8", "--tests", "examples/tests.py"], "not UTF-8"),
    (["examples/program.py", "--tests", "examples/tests.py", "--timeout", "0"], "--timeout"),
    (["examples/program.py", "--tests", "examples/tests.py", "--timeout", "abc"], "--timeout"),
    (["examples/program.py"], "--tests"),
])
def test_cli_verify_code_bad_input(capsys, tmp_path, monkeypatch, args, message):
    monkeypatch.chdir(ROOT)
    latin = tmp_path / "latin1.py"
    latin.write_bytes(b"s = '\xe9t\xe9'\n")
    args = [str(latin) if a == "NONUTF8" else a for a in args]
    code, out, _ = _ttc(capsys, "verify", "code", *args, "--json")
    assert code == 2
    assert message in json.loads(out)["error"]["message"]


def test_cli_refuses_with_exit_1_when_isolation_is_unavailable(capsys, monkeypatch):
    monkeypatch.chdir(ROOT)
    monkeypatch.setattr(_sandbox.os, "geteuid", lambda: 1000)
    code, out, err = _ttc(capsys, "verify", "code", "examples/program.py", "--tests", "examples/tests.py", "--json")
    assert code == 1
    error = json.loads(out)["error"]
    assert error["type"] == "SandboxUnavailableError" and "refusing to run code unconfined" in error["message"]
    assert "refusing" in err and "Traceback" not in err
