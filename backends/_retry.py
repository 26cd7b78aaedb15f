"""Bounded retries for HTTP backends: which failures are transient, how long to wait.

Private to ``backends``. The openai client's own retry loop is switched off so that this
module is the only one: one policy, one attempt count in error messages, and a sleep and
a clock tests can replace. The timeout and retry options, with their ``TTC_*``
environment defaults, are resolved here too, so a dead endpoint's worst case (connect
timeout x attempts + backoff) is decided in one place.
"""

from __future__ import annotations

import email.utils
import math
import os
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TypeVar

import openai
from tenacity import Retrying, retry_if_exception, stop_after_attempt

from .errors import BackendError, BadInputError, EndpointError, TTCError

__all__ = [
    "DEFAULT_CONNECT_TIMEOUT",
    "DEFAULT_MAX_RETRIES",
    "DEFAULT_TIMEOUT",
    "RetryPolicy",
    "StreamCut",
    "call_with_retries",
    "describe",
    "env_text",
    "one_line",
    "retries_option",
    "seconds_option",
]

T = TypeVar("T")

_MAX_MESSAGE = 300

# With these defaults an endpoint where nothing answers fails within about 25 s:
# 4 attempts x 5 s to connect, plus waits of about 0.5, 1 and 2 s (and jitter).
DEFAULT_CONNECT_TIMEOUT = 5.0
DEFAULT_TIMEOUT = 600.0  # reading one response: long generations are slow, not dead
DEFAULT_MAX_RETRIES = 3
MAX_RETRIES_LIMIT = 100  # the CLI's --max-retries bound; more is a typo, not a policy


def env_text(name: str) -> str | None:
    """The variable's value, or None when unset or blank (as click treats them)."""
    raw = os.environ.get(name)
    return raw if raw is not None and raw.strip() else None


def seconds_option(value: float | None, name: str, env: str, default: float) -> float:
    """A timeout: ``value`` if given, else ``$env`` if set, else ``default``.

    Raises:
        BadInputError: Not a finite number > 0, naming ``name`` or the variable.
    """
    source, raw = (name, value) if value is not None else (env, env_text(env))
    if raw is None:
        return default
    try:
        if isinstance(raw, bool):  # True would silently mean one second
            raise TypeError
        seconds = float(raw)
    except (TypeError, ValueError):
        seconds = math.nan
    if not (math.isfinite(seconds) and seconds > 0):
        raise BadInputError(f"{source} must be a finite number of seconds > 0, got {raw!r}")
    return seconds


def retries_option(value: int | None, name: str, env: str, default: int) -> int:
    """A retry count: ``value`` if given, else ``$env`` if set, else ``default``.

    Raises:
        BadInputError: Not a whole number from 0 to 100, naming ``name`` or the variable.
    """
    source, raw = (name, value) if value is not None else (env, env_text(env))
    if raw is None:
        return default
    count: int | None = None
    if isinstance(raw, str):
        try:
            count = int(raw)  # "3.0" and "three" are refused, not rounded
        except ValueError:
            count = None
    elif isinstance(raw, int) and not isinstance(raw, bool):
        count = raw
    if count is None or not 0 <= count <= MAX_RETRIES_LIMIT:
        raise BadInputError(
            f"{source} must be a whole number from 0 to {MAX_RETRIES_LIMIT}, got {raw!r}"
        )
    return count


class StreamCut(Exception):
    """A stream ended before its first text chunk without saying why; safe to retry."""


def one_line(text: object, limit: int = _MAX_MESSAGE) -> str:
    """Collapse whitespace and truncate, because CLI errors are one line."""
    flat = " ".join(str(text).split())
    return flat if len(flat) <= limit else flat[: limit - 3] + "..."


def is_transient(exc: BaseException) -> bool:
    """Whether trying the same request again may succeed.

    429 and 5xx are the server saying "not now"; connection errors and timeouts (which
    the openai client raises as APIConnectionError and its subclass APITimeoutError) are
    the network saying it. Other 4xx mean the request itself is wrong, so repeating it
    only wastes the budget's wall time.
    """
    if isinstance(exc, openai.APIStatusError):
        return exc.status_code == 429 or exc.status_code >= 500
    return isinstance(exc, (openai.APIConnectionError, StreamCut))


def retry_after_seconds(exc: BaseException) -> float | None:
    """The wait a 429/503 response asks for, from ``retry-after-ms`` or ``Retry-After``."""
    if not isinstance(exc, openai.APIStatusError):
        return None
    headers = exc.response.headers
    raw_ms = headers.get("retry-after-ms")
    if raw_ms is not None:
        try:
            return max(0.0, float(raw_ms) / 1000.0)
        except ValueError:
            pass
    raw = headers.get("retry-after")
    if raw is None:
        return None
    try:
        return max(0.0, float(raw))
    except ValueError:
        pass
    # Retry-After may also be an HTTP date (RFC 9110).
    try:
        when = email.utils.parsedate_to_datetime(raw)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def server_message(exc: openai.APIStatusError) -> str:
    """The human part of an error body, whichever shape the server uses.

    OpenAI nests it as ``{"error": {"message"}}``, vLLM puts ``message`` at the top,
    FastAPI-based servers use ``detail``.
    """
    body = exc.body
    if isinstance(body, dict):
        err = body.get("error")
        if isinstance(err, dict) and err.get("message"):
            return str(err["message"])
        if isinstance(err, str) and err:
            return err
        for key in ("message", "detail"):
            if body.get(key):
                return str(body[key])
    if isinstance(body, str) and body:
        return body
    try:
        return exc.response.text or exc.response.reason_phrase
    except Exception:  # a streamed body that was never read
        return exc.response.reason_phrase


def _where(exc: openai.APIError) -> str:
    try:
        return f"{exc.request.method} {exc.request.url.path}"
    except Exception:
        return "request"


def describe(exc: BaseException) -> str:
    """One line saying what failed, for EndpointError and BackendError messages."""
    if isinstance(exc, openai.APIStatusError):
        reason = exc.response.reason_phrase or ""
        return one_line(
            f"HTTP {exc.status_code} {reason} from {_where(exc)}: {server_message(exc)}"
        )
    if isinstance(exc, openai.APITimeoutError):
        return one_line(f"{_where(exc)} timed out ({_cause(exc)})")
    if isinstance(exc, openai.APIConnectionError):
        return one_line(f"{_where(exc)}: connection failed ({_cause(exc)})")
    return one_line(f"{type(exc).__name__}: {exc}")


def _cause(exc: BaseException) -> str:
    cause = exc.__cause__ or exc.__context__
    if cause is None:
        return type(exc).__name__
    text = str(cause)
    return f"{type(cause).__name__}: {text}" if text else type(cause).__name__


@dataclass
class RetryPolicy:
    """How one endpoint is retried.

    Attributes:
        endpoint: Base URL, named in every error.
        max_retries: Retries after the first attempt (so max_retries + 1 attempts).
        backoff_initial: First wait in seconds; later waits double, plus jitter.
        backoff_max: No single wait is longer, Retry-After included, so one odd header
            cannot stall a batch job for an hour.
        sleep: Called with each wait; tests pass a recorder instead of time.sleep.
        clock: Monotonic seconds, for the time a failure took (named in its error);
            tests pass a fake that their sleep and transport advance.
    """

    endpoint: str
    max_retries: int = DEFAULT_MAX_RETRIES
    backoff_initial: float = 0.5
    backoff_max: float = 20.0
    sleep: Callable[[float], None] = field(default=time.sleep)
    clock: Callable[[], float] = field(default=time.monotonic)

    def wait(self, retry_state) -> float:
        """Seconds before the next attempt: Retry-After if sent, else jittered backoff."""
        exc = retry_state.outcome.exception() if retry_state.outcome else None
        asked = retry_after_seconds(exc) if exc is not None else None
        if asked is not None:
            return min(asked, self.backoff_max)
        # Computed here rather than with tenacity's wait_exponential_jitter, whose
        # arguments differ between tenacity 8 and 9. Jitter spreads the retries of many
        # concurrent workers so that they do not hit a recovering server in lockstep.
        doubling = self.backoff_initial * 2 ** (retry_state.attempt_number - 1)
        return min(self.backoff_max, doubling + random.uniform(0, self.backoff_initial))


def call_with_retries(fn: Callable[[], T], policy: RetryPolicy) -> T:
    """Call ``fn`` until it succeeds, retrying transient failures under ``policy``.

    Raises:
        EndpointError: A transient failure persisted through every attempt.
        BackendError: The server rejected the request (4xx other than 429) or answered
            with something the client could not use; not retried.
    """
    attempts = 0
    start = policy.clock()

    def attempt() -> T:
        nonlocal attempts
        attempts += 1
        return fn()

    retrying = Retrying(
        stop=stop_after_attempt(policy.max_retries + 1),
        wait=policy.wait,
        retry=retry_if_exception(is_transient),
        sleep=policy.sleep,
        reraise=True,
    )
    try:
        return retrying(attempt)
    except TTCError:  # already typed, e.g. bad input found while preparing the request
        raise
    except (openai.APIStatusError, openai.APIConnectionError, StreamCut) as exc:
        if is_transient(exc):
            plural = "s" if attempts != 1 else ""
            spent = max(0.0, policy.clock() - start)
            raise EndpointError(
                policy.endpoint,
                f"{describe(exc)}, after {attempts} attempt{plural} in {spent:.1f} s",
            ) from exc
        raise BackendError(f"{policy.endpoint}: {describe(exc)}") from exc
    except openai.OpenAIError as exc:
        raise BackendError(f"{policy.endpoint}: {describe(exc)}") from exc
    except ValueError as exc:  # a stream event that is not JSON
        raise BackendError(f"{policy.endpoint}: malformed response: {one_line(exc)}") from exc
