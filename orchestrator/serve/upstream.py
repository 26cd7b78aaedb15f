"""Passing a bare request through to an upstream OpenAI-compatible server (vLLM, SGLang, ...).

A request for an upstream model without a strategy is that server's business: its body
goes there as it came (unknown parameters included, ``ttc`` removed), with ``max_tokens``
and ``n`` shrunk when the request's ``ttc.budget`` cannot hold them. The upstream applies
its own chat template and decides about lengths. What it reports as usage is checked
(an untrusted server) and charged to the request's ledger, and the call is one ``llm``
span of the request's run. Streams ask the upstream for a usage chunk so the request can
always be charged; the client sees one only if it asked for it.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from types import SimpleNamespace
from typing import Any

import httpx
from ttc.backends._usage import usage_pair
from ttc.backends.errors import BackendError, EndpointError
from ttc.backends.types import Usage
from ttc.core.budget import Ledger

from ..chat import ChatPlan
from .errors import ApiError
from .streaming import sse

__all__ = ["ProxyResult", "proxy"]

# A server counts no more prompt tokens than UTF-8 bytes, plus special tokens and a chat
# template: this bound is what a budget reserves for a prompt it cannot tokenize.
_TEMPLATE_ALLOWANCE = 64


class ProxyResult:
    """What the upstream answered: its body (non-streaming) and the usage charged."""

    def __init__(self, body: dict[str, Any] | None, usage: Usage, ledger: Ledger, usage_chunk: dict | None = None):
        self.body, self.usage, self.ledger, self.usage_chunk = body, usage, ledger, usage_chunk


def _prompt_bound(plan: ChatPlan, body: dict[str, Any]) -> int:
    text = json.dumps(body.get("messages") if plan.kind == "chat" else body.get("prompt"), ensure_ascii=False)
    return len(text.encode()) + _TEMPLATE_ALLOWANCE


def _outgoing(plan: ChatPlan, body: dict[str, Any], ledger: Ledger) -> tuple[dict[str, Any], Any]:
    out = {k: v for k, v in body.items() if k != "ttc"}
    out["model"] = plan.model
    reservation = None
    if plan.budget is not None:
        reservation = ledger.reserve(_prompt_bound(plan, body), plan.sampling.max_tokens, plan.sampling.n)
        if reservation is None:
            raise ApiError(400, "the request's ttc.budget cannot hold this prompt and one token",
                           param="ttc.budget", code="budget_too_small")
        out["n"] = reservation.n
        out.pop("max_completion_tokens", None)
        out["max_tokens"] = reservation.max_tokens
    return out, reservation


def _raise_for(resp: httpx.Response, url: str) -> None:
    if resp.status_code < 400:
        return
    try:
        err = resp.json().get("error")
        message = err.get("message") if isinstance(err, dict) else str(err)
    except (ValueError, AttributeError):
        message = resp.text[:200]
    message = f"upstream {url}: {message or resp.reason_phrase}"
    if resp.status_code >= 500:
        raise ApiError(502, message, code="upstream_error")
    raise ApiError(resp.status_code, message, code="upstream_error")


def _charge(ledger: Ledger, reservation: Any, usage: Any, url: str, samples: int) -> Usage:
    pair = usage_pair(SimpleNamespace(**usage) if isinstance(usage, dict) else usage, url)
    if pair is None:
        if reservation is not None:
            ledger.release(reservation)
        raise BackendError(f"upstream {url} reported no token usage: ttc charges every request exactly")
    spent = Usage(prompt_tokens=pair[0], completion_tokens=pair[1], calls=1)
    ledger.settle(reservation, spent, samples=samples)
    return spent


def proxy(client: httpx.Client, base_url: str, plan: ChatPlan, body: dict[str, Any], tracer: Any, *,
          on_event: Callable[[str], None] | None = None, cancelled: Callable[[], bool] = lambda: False
          ) -> ProxyResult:
    """Sends ``body`` to the upstream and charges what it reports.

    Args:
        client: The HTTP client.
        base_url: The upstream's API root (``http://host:port/v1``).
        plan: The request's plan (its budget, kind and stream options).
        body: The request body as the client sent it.
        tracer: The request's run.
        on_event: For a stream: called with each SSE event to forward.
        cancelled: Polled between stream events; True stops reading the upstream.

    Raises:
        ApiError: The upstream rejected the request (its status; 502 for a 5xx).
        BackendError: The upstream was unreachable or sent an invalid body or usage (502).
    """
    ledger = Ledger(plan.budget)
    out, reservation = _outgoing(plan, body, ledger)
    url = f"{base_url.rstrip('/')}/{'chat/completions' if plan.kind == 'chat' else 'completions'}"
    headers = {"Authorization": f"Bearer {os.environ.get('TTC_UPSTREAM_API_KEY') or 'EMPTY'}"}
    with tracer.span("llm", "upstream", **{"gen_ai.operation.name": plan.kind, "gen_ai.request.model": plan.model,
                                          "server.address": base_url, "ttc.stream": plan.stream}) as span:
        try:
            if plan.stream:
                out["stream_options"] = {**(out.get("stream_options") or {}), "include_usage": True}
                result = _stream(client, url, out, headers, plan, on_event or (lambda _: None), cancelled)
            else:
                resp = client.post(url, json=out, headers=headers)
                _raise_for(resp, url)
                try:
                    data = resp.json()
                    usage = data.get("usage")
                except (ValueError, AttributeError):
                    raise BackendError(f"upstream {url} answered something other than a JSON object") from None
                result = (data, usage, None)
        except httpx.HTTPError as exc:
            if reservation is not None:
                ledger.release(reservation)
            raise EndpointError(f"upstream {url} failed: {type(exc).__name__}: {exc}") from None
        except BaseException:
            if reservation is not None:
                ledger.release(reservation)
            raise
        data, usage, usage_chunk = result
        choices = (data or {}).get("choices") or [None] * plan.sampling.n
        if usage is None and plan.stream and cancelled():
            # The client left before the upstream's usage chunk: nothing reported, nothing to charge.
            if reservation is not None:
                ledger.release(reservation)
            spent = Usage()
        else:
            spent = _charge(ledger, reservation, usage, url, samples=len(choices))
        span.record_usage(input_tokens=spent.prompt_tokens, output_tokens=spent.completion_tokens, model=plan.model)
    return ProxyResult(data, spent, ledger, usage_chunk)


def _stream(client: httpx.Client, url: str, out: dict[str, Any], headers: dict[str, str], plan: ChatPlan,
            on_event: Callable[[str], None], cancelled: Callable[[], bool]) -> tuple[None, Any, dict | None]:
    usage, usage_chunk = None, None
    with client.stream("POST", url, json=out, headers=headers) as resp:
        if resp.status_code >= 400:
            resp.read()
            _raise_for(resp, url)
        for line in resp.iter_lines():
            if not line.startswith("data:"):
                continue
            payload = line[5:].strip()
            if payload == "[DONE]":
                break
            try:
                chunk = json.loads(payload)
            except json.JSONDecodeError:
                raise BackendError(f"upstream {url} sent a stream event that is not JSON") from None
            if not isinstance(chunk, dict):
                continue
            if chunk.get("usage"):
                usage = chunk["usage"]
            if not chunk.get("choices"):
                if chunk.get("usage"):
                    usage_chunk = chunk  # sent last, with ttc's own field, if the client asked for usage
                continue
            if not plan.include_usage:
                chunk.pop("usage", None)
            on_event(sse(chunk))
            if cancelled():
                break
    return None, usage, usage_chunk
