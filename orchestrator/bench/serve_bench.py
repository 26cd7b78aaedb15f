"""``ttc bench serve``: ``ttc serve`` under load, beside the backend it wraps.

A real ``ttc serve`` process (the built-in countdown-direct model, one torch thread) is
driven by one asyncio client with the official ``openai`` client. Every request is a
completion of exactly 64 tokens (vLLM's ``ignore_eos``), so latencies compare like with
like. At 1 client, server requests alternate with direct calls of the same model through
an in-process ``TransformersBackend`` (also one torch thread) — the overhead of HTTP,
tracing and the queue is the ratio of their p50 latencies. At 8 and 32 concurrent
clients, requests/s shows what the generation queue's continuous batching buys.
"""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from ttc.tasks.countdown import COUNTDOWN

from .common import bench_header, write_result

__all__ = ["run_serve_bench"]

SEED = 0
MODEL = "countdown-direct"
MAX_TOKENS = 64
LEVELS = (1, 8, 32)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _pct(values: list[float], q: float) -> float:
    xs = sorted(values)
    k = (len(xs) - 1) * q
    lo, hi = int(k), min(int(k) + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (k - lo)


def _summary(latencies: list[float], wall: float, errors: int, tokens: list[int]) -> dict[str, Any]:
    return {"requests": len(latencies) + errors, "errors": errors, "wall_s": wall,
            "requests_per_s": len(latencies) / wall if wall else 0.0,
            "latency_p50_s": _pct(latencies, 0.5) if latencies else None,
            "latency_p95_s": _pct(latencies, 0.95) if latencies else None,
            "completion_tokens": sorted(set(tokens))}


def _start_server(db: str, port: int) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TTC_DB": db}
    cmd = [sys.executable, "-m", "ttc", "serve", "--port", str(port), "--db", db, "--device", "cpu",
           "--max-concurrency", "64", "--max-queued", "64"]
    return subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


async def _wait_healthy(client, proc: subprocess.Popen, timeout: float = 180.0) -> None:
    import httpx

    deadline = time.monotonic() + timeout
    async with httpx.AsyncClient() as http:
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"ttc serve exited: {proc.stderr.read()[-2000:] if proc.stderr else ''}")
            try:
                if (await http.get(str(client.base_url).removesuffix("v1/") + "health")).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            await asyncio.sleep(0.25)
    raise RuntimeError("ttc serve did not become healthy")


async def _drive(port: int, backend, prompts: list[str], per_level: dict[int, int]) -> dict[str, Any]:
    from openai import AsyncOpenAI

    from ttc.backends.types import SamplingParams

    client = AsyncOpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="-", max_retries=0, timeout=600)

    async def server(i: int) -> tuple[float, int]:
        t0 = time.perf_counter()
        r = await client.completions.create(model=MODEL, prompt=prompts[i % len(prompts)], max_tokens=MAX_TOKENS,
                                            temperature=1.0, seed=SEED + i, extra_body={"ignore_eos": True})
        return time.perf_counter() - t0, r.usage.completion_tokens

    async def direct(i: int) -> tuple[float, int]:
        params = SamplingParams(max_tokens=MAX_TOKENS, temperature=1.0, seed=SEED + i, ignore_eos=True)
        t0 = time.perf_counter()
        g = await asyncio.to_thread(backend.generate, [prompts[i % len(prompts)]], params)
        return time.perf_counter() - t0, g[0].usage.completion_tokens

    # Warm both paths: first calls pay for lazy initialisation.
    for i in range(3):
        await server(i)
        await direct(i)
    out: dict[str, Any] = {}
    n1 = per_level[1]
    lat_s, lat_d, tok_s, tok_d, errors = [], [], [], [], 0
    t0 = time.perf_counter()
    for i in range(n1):  # interleaved: machine noise hits both alike
        try:
            lat, tok = await server(i)
            lat_s.append(lat)
            tok_s.append(tok)
        except Exception:  # noqa: BLE001 - counted: the goal is no errors under load
            errors += 1
        lat, tok = await direct(i)
        lat_d.append(lat)
        tok_d.append(tok)
    wall = time.perf_counter() - t0
    out["clients_1"] = _summary(lat_s, sum(lat_s), errors, tok_s)
    out["direct_1"] = _summary(lat_d, sum(lat_d), 0, tok_d)
    out["interleaved_wall_s"] = wall
    for level in LEVELS[1:]:
        n = per_level[level]
        lats: list[float] = []
        toks: list[int] = []
        errs = 0
        todo = iter(range(n))

        async def client_loop() -> None:
            nonlocal errs
            for i in todo:
                try:
                    lat, tok = await server(1000 * level + i)
                    lats.append(lat)
                    toks.append(tok)
                except Exception:  # noqa: BLE001
                    errs += 1

        t0 = time.perf_counter()
        await asyncio.gather(*(client_loop() for _ in range(level)))
        out[f"clients_{level}"] = _summary(lats, time.perf_counter() - t0, errs, toks)
    await client.close()
    return out


def run_serve_bench(*, quick: bool, out_dir: Path, progress=None) -> dict[str, Any]:
    """Runs the bench and writes ``serve.json``; returns the result."""
    import torch

    from ..models import load_backend

    started = time.time()
    n = 24 if quick else 100
    per_level = {1: n, 8: max(n, 8 * 3), 32: max(n, 32 * 4)}
    prompts = [COUNTDOWN.prompt(p) for p in COUNTDOWN.make_problems(16, seed=SEED, split="test")]
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        backend = load_backend(MODEL, device="cpu")
        with tempfile.TemporaryDirectory(prefix="ttc-bench-serve-") as tmp:
            port = _free_port()
            proc = _start_server(f"sqlite:///{Path(tmp) / 'serve.db'}", port)
            try:
                async def main():
                    from openai import AsyncOpenAI

                    probe = AsyncOpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="-")
                    await _wait_healthy(probe, proc)
                    await probe.close()
                    return await _drive(port, backend, prompts, per_level)

                levels = asyncio.run(main())
            finally:
                proc.terminate()
                try:
                    proc.wait(timeout=60)
                except subprocess.TimeoutExpired:
                    proc.kill()
    finally:
        torch.set_num_threads(before)
    if progress is not None:
        for k, v in levels.items():
            if isinstance(v, dict):
                progress.print(f"{k}: {v['requests_per_s']:.2f} req/s, p50 {v['latency_p50_s']:.3f}s, "
                               f"errors {v['errors']}")
    one, direct = levels["clients_1"], levels["direct_1"]
    result = bench_header("serve", seed=SEED, quick=quick, n_problems=len(prompts),
                          models=[{"name": MODEL, "digest": backend.info.checkpoint_digest}], started=started)
    result.update({
        "max_tokens": MAX_TOKENS, "torch_threads": 1, "levels": levels,
        "errors": sum(v["errors"] for v in levels.values() if isinstance(v, dict)),
        "p50_vs_direct": one["latency_p50_s"] / direct["latency_p50_s"],
        "rps_32_vs_1": levels["clients_32"]["requests_per_s"] / one["requests_per_s"],
        "rps_8_vs_1": levels["clients_8"]["requests_per_s"] / one["requests_per_s"],
        "goal": {"errors": 0, "p50_vs_direct_at_most": 1.05, "rps_32_vs_1_at_least": 4.0},
    })
    write_result("serve", result, out_dir)
    return result

