"""Pieces every CLI command shares: consoles, JSON output, safe tables, flag checks, remote options.

Everything a command prints from data (run names, model names, answers) goes through
:func:`esc` or :func:`make_table`, because Rich would otherwise read ``[...]`` in that
data as markup and crash on it (DESIGN.md, Trust). Flag values are checked here, at the
boundary, so a bad value is one line and exit 2 before any model loads.
"""

from __future__ import annotations

import functools
import inspect
import json
import math
import re
import socket
import sys
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from ttc.backends.errors import BadInputError, RunFailure

__all__ = [
    "stdout", "stderr", "emit_json", "jsonable", "esc", "make_table", "DbOption", "JsonOption",
    "read_text_arg", "check_int", "check_seed", "check_temperature", "check_top_p", "check_budget",
    "check_strategy_params", "parse_roles", "RemoteOptions", "NO_REMOTE", "with_remote_options", "open_orchestrator",
    "SEED_MAX", "bind_socket",
]

# Human output on stdout; progress bars, logs and warnings on stderr, so that
# `--json` keeps stdout to exactly one JSON object. emoji=False: ":name:" in data stays as typed.
stdout = Console(emoji=False)
stderr = Console(stderr=True, emoji=False)

DbOption = Annotated[
    str | None,
    typer.Option("--db", help="SQLAlchemy URL of the trace store (default: $TTC_DB, then sqlite:///ttc.db)."),
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print exactly one JSON object on stdout.")]

# torch and the OpenAI API take seeds as signed 64-bit integers.
SEED_MAX = 2**63 - 1


def jsonable(obj: Any) -> Any:
    """Pydantic models and datetimes turned into plain JSON values."""
    if hasattr(obj, "model_dump"):
        return obj.model_dump(mode="json")
    if isinstance(obj, dict):
        return {k: jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v) for v in obj]
    return obj


def emit_json(obj: Any) -> None:
    sys.stdout.write(json.dumps(jsonable(obj)) + "\n")
    sys.stdout.flush()


def esc(value: Any) -> str:
    """``value`` as text Rich prints literally (its ``[...]`` is not markup)."""
    return escape(str(value))


def make_table(*headers: str, title: str | None = None) -> Table:
    """A table whose cells fold long ids and names onto more lines instead of cutting them.

    Args:
        headers: Column headings (literal text).
        title: Literal text; escaped here.
    """
    table = Table(title=esc(title) if title is not None else None)
    for h in headers:
        table.add_column(esc(h), overflow="fold", no_wrap=False)
    return table


def read_text_arg(value: str, what: str) -> str:
    """``@path`` reads a file, ``-`` reads stdin, anything else is the value itself.

    Raises:
        BadInputError: The file cannot be read or is not UTF-8.
    """
    try:
        if value == "-":
            return sys.stdin.read()
        if value.startswith("@"):
            path = Path(value[1:])
            try:
                return path.read_text(encoding="utf-8")
            except OSError as exc:
                raise BadInputError(f"cannot read {what} file {path}: {exc.strerror or exc}") from exc
    except UnicodeDecodeError as exc:
        source = "stdin" if value == "-" else value[1:]
        raise BadInputError(f"{what} from {source} is not UTF-8 text (byte {exc.start})") from None
    return value


# ---------------------------------------------------------------------- flag checks


def check_int(value: Any, name: str, *, lo: int = 1, hi: int | None = None) -> int:
    """``value`` as an integer in ``lo..hi``.

    Raises:
        BadInputError: Not an integer (booleans and floats are not), or out of range.
    """
    if isinstance(value, bool) or not isinstance(value, int):
        raise BadInputError(f"{name} must be an integer, got {value!r}")
    if value < lo:
        raise BadInputError(f"{name} must be at least {lo}, got {value}")
    if hi is not None and value > hi:
        raise BadInputError(f"{name} must be at most {hi}, got {value}")
    return value


def check_seed(value: Any, name: str = "--seed") -> int:
    """A seed every backend accepts: an integer in 0..2**63-1."""
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= SEED_MAX:
        raise BadInputError(f"{name} must be an integer from 0 to 2**63-1, got {value!r}")
    return value


def _number(value: Any, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise BadInputError(f"{name} must be a finite number, got {value!r}")
    return float(value)


def check_temperature(value: Any, name: str = "--temperature") -> float:
    """A finite temperature >= 0 (0 is greedy)."""
    if _number(value, name) < 0:
        raise BadInputError(f"{name} must be >= 0, got {value}")
    return float(value)


def check_top_p(value: Any, name: str = "--top-p") -> float:
    """A nucleus mass in (0, 1]."""
    if not 0 < _number(value, name) <= 1:
        raise BadInputError(f"{name} must be in (0, 1], got {value}")
    return float(value)


def check_budget(value: int | None, name: str = "--budget-tokens") -> int | None:
    """A budget limit of at least 1, or None for no limit."""
    return None if value is None else check_int(value, name, lo=1)


# Strategy parameters whose meaning is a count (at least 1) or a length in tokens.
_POSITIVE_PARAMS = frozenset({"n", "max_tokens", "round_size", "k", "beam_width", "max_depth", "max_expansions",
                              "max_tokens_per_step", "probe_samples"})
_NON_NEGATIVE_PARAMS = frozenset({"restarts"})


def check_strategy_params(params: dict[str, Any], *, source: str = "-P ") -> dict[str, Any]:
    """Checks the known numeric strategy parameters; ``None`` keeps a strategy's default.

    Args:
        params: Parameter name -> value (from flags or ``-P KEY=VALUE``).
        source: Prefix naming where a value came from, for the message (``-P n``).

    Raises:
        BadInputError: A count below 1, a non-finite or negative temperature, a seed out of range.
    """
    for key, value in params.items():
        if value is None:
            continue
        name = f"{source}{key}"
        if key in _POSITIVE_PARAMS:
            check_int(value, name, lo=1)
        elif key in _NON_NEGATIVE_PARAMS:
            check_int(value, name, lo=0)
        elif key == "temperature":
            check_temperature(value, name)
        elif key == "seed":
            check_seed(value, name)
    return params


_ROLE = re.compile(r"[A-Za-z_][A-Za-z0-9_-]*")


def parse_roles(values: list[str] | None) -> dict[str, str]:
    """``--role ROLE=MODEL`` values as a role -> model dict.

    Raises:
        BadInputError: A value without ``=``, an empty or malformed role or model, a role given twice.
    """
    roles: dict[str, str] = {}
    for item in values or []:
        role, sep, model = item.partition("=")
        role, model = role.strip(), model.strip()
        if not sep or not _ROLE.fullmatch(role) or not model:
            raise BadInputError(f"--role expects ROLE=MODEL (e.g. search=countdown-search), got {item!r}")
        if role in roles:
            raise BadInputError(f"--role {role} is given twice")
        roles[role] = model
    return roles


# ---------------------------------------------------------------------- remote / trust options


@dataclass(frozen=True)
class RemoteOptions:
    """How models are loaded and reached: the common trust and remote flags.

    Attributes:
        trust_remote_code: Let a checkpoint run its own code (off unless asked for).
        connect_timeout: Seconds to wait for a server's connection.
        timeout: Seconds to wait for one request.
        max_retries: Retries of a failed request (429, 5xx, timeouts).
        tokenizer: Tokenizer name or directory, when it differs from the model's.
    """

    trust_remote_code: bool = False
    connect_timeout: float | None = None
    timeout: float | None = None
    max_retries: int | None = None
    tokenizer: str | None = None

    def check(self) -> "RemoteOptions":
        """Raises BadInputError for a non-positive timeout, negative retries, an empty tokenizer."""
        for name, value in (("--connect-timeout", self.connect_timeout), ("--timeout", self.timeout)):
            if value is not None and not (math.isfinite(value) and value > 0):
                raise BadInputError(f"{name} must be a finite number of seconds > 0, got {value}")
        if self.max_retries is not None:
            check_int(self.max_retries, "--max-retries", lo=0, hi=100)
        if self.tokenizer is not None and not self.tokenizer.strip():
            raise BadInputError("--tokenizer must not be empty")
        return self

    def orchestrator_kwargs(self) -> dict[str, Any]:
        """The options that differ from their defaults, as ``Orchestrator`` keywords."""
        defaults = RemoteOptions()
        return {f.name: getattr(self, f.name) for f in fields(self)
                if getattr(self, f.name) != getattr(defaults, f.name)}


NO_REMOTE = RemoteOptions()

_REMOTE_PARAMS = {
    "trust_remote_code": (bool, typer.Option(
        "--trust-remote-code", envvar="TTC_TRUST_REMOTE_CODE",
        help="Allow a checkpoint to run its own Python code (untrusted: off by default).")),
    "connect_timeout": (float | None, typer.Option(
        "--connect-timeout", envvar="TTC_CONNECT_TIMEOUT", metavar="SECONDS",
        help="Seconds to wait for a model server's connection.")),
    "timeout": (float | None, typer.Option(
        "--timeout", envvar="TTC_TIMEOUT", metavar="SECONDS", help="Seconds to wait for one model request.")),
    "max_retries": (int | None, typer.Option(
        "--max-retries", envvar="TTC_MAX_RETRIES", metavar="N",
        help="Retries of a failed model request (429, 5xx, timeouts).")),
    "tokenizer": (str | None, typer.Option(
        "--tokenizer", envvar="TTC_TOKENIZER", metavar="NAME_OR_DIR",
        help="Tokenizer to use when it differs from the model's.")),
}


def with_remote_options(fn):
    """Gives a command the trust/remote flags in place of its ``remote: RemoteOptions`` parameter.

    The flags (each also a ``TTC_*`` variable) are declared once, here; the command receives
    them checked, as one :class:`RemoteOptions`.
    """
    sig = inspect.signature(fn, eval_str=True)
    params = list(sig.parameters.values())
    at = [p.name for p in params].index("remote")
    added = [inspect.Parameter(name, inspect.Parameter.POSITIONAL_OR_KEYWORD,
                               default=getattr(RemoteOptions(), name), annotation=Annotated[tp, opt])
             for name, (tp, opt) in _REMOTE_PARAMS.items()]

    @functools.wraps(fn)
    def command(*args: Any, **kwargs: Any) -> Any:
        remote = RemoteOptions(**{name: kwargs.pop(name) for name in _REMOTE_PARAMS}).check()
        return fn(*args, remote=remote, **kwargs)

    new_params = params[:at] + added + params[at + 1:]
    command.__signature__ = sig.replace(parameters=new_params)
    command.__annotations__ = {p.name: p.annotation for p in new_params}
    return command


def open_orchestrator(db: str | None, device: str = "auto", remote: RemoteOptions | None = None):
    """The Orchestrator a command works with (imported late: `ttc --help` loads no model code).

    Only options that differ from their defaults are passed, so an Orchestrator without a
    keyword still serves every command that does not use it.
    """
    from .api import Orchestrator

    return Orchestrator(db=db, device=device, **(remote.orchestrator_kwargs() if remote else {}))


def bind_socket(host: str, port: int) -> socket.socket:
    """A listening TCP socket on ``host:port`` (port 0: a free one) for uvicorn to serve on.

    Bound here, before the app starts, so that a busy port is one line and exit 1.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise RunFailure(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock
