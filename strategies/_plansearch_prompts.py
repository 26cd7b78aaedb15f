"""PlanSearch's prompts (our own wording) and the parsing of the planner's replies.

Every prompt is one user turn: a backend in chat mode (``OpenAIBackend(mode="chat")``)
wraps it in the server's chat template, a completions endpoint reads it as raw text.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

__all__ = [
    "critique_prompt",
    "derive_prompt",
    "fix_prompt",
    "normalize",
    "observations_prompt",
    "parse_list",
    "plan_prompt",
    "solution_prompt",
]

# A list item: "1. text", "2) text", "- text", "* text", "• text" (markdown bold allowed around the number).
_ITEM = re.compile(r"^\s*(?:\*\*)?(?:\d{1,3}[.):]|[-*•])(?:\*\*)?\s+(.*\S)\s*$")


def _observations(observations: Sequence[str]) -> str:
    if not observations:
        return "(none)"
    return "\n".join(f"{i}. {o}" for i, o in enumerate(observations, 1))


def observations_prompt(problem: str, k: int) -> str:
    """Asks for ``k`` first-order observations about a problem, as a numbered list."""
    return (
        "You will be given a programming problem. Do not solve it and do not write code.\n"
        f"Instead, write {k} distinct observations about the problem that would help someone solve it: "
        "properties of the input and output, constraints, edge cases, useful facts or algorithmic ideas. "
        "Each observation is one or two sentences.\n\n"
        f"Problem:\n{problem.strip()}\n\n"
        "Write the observations as a numbered list (1. ... 2. ...), one per line, and nothing else."
    )


def derive_prompt(problem: str, observations: Sequence[str], k: int) -> str:
    """Asks for up to ``k`` new observations that follow from the given ones."""
    return (
        "You will be given a programming problem and some observations about it. Do not solve it and "
        "do not write code.\n"
        f"Combine the observations and draw up to {k} new observations that follow from them "
        "(consequences, a sharper idea, a case they imply). Do not repeat the given observations.\n\n"
        f"Problem:\n{problem.strip()}\n\n"
        f"Observations:\n{_observations(observations)}\n\n"
        "Write only the new observations as a numbered list (1. ... 2. ...), one per line."
    )


def plan_prompt(problem: str, observations: Sequence[str]) -> str:
    """Asks for a natural-language plan that builds on the given observations."""
    return (
        "You will be given a programming problem and observations about it.\n"
        "Using the observations, write a plan to solve the problem: the idea, then the steps, in plain "
        "English. Do not write code.\n\n"
        f"Problem:\n{problem.strip()}\n\n"
        f"Observations:\n{_observations(observations)}\n\n"
        "Plan:"
    )


def critique_prompt(problem: str, plan: str) -> str:
    """Asks for a critique of a plan."""
    return (
        "You will be given a programming problem and a proposed plan to solve it.\n"
        "Review the plan critically: name any mistake, missed case or wrong assumption, and say how it "
        "would make a solution fail. If the plan is correct, say so. Do not write code.\n\n"
        f"Problem:\n{problem.strip()}\n\n"
        f"Proposed plan:\n{plan.strip()}\n\n"
        "Critique:"
    )


def fix_prompt(problem: str, plan: str, critique: str) -> str:
    """Asks for the plan rewritten to answer its critique."""
    return (
        "You will be given a programming problem, a proposed plan and a critique of the plan.\n"
        "Rewrite the plan so that it addresses the critique (if the critique found nothing wrong, "
        "repeat the plan). Write only the improved plan, in plain English, without code.\n\n"
        f"Problem:\n{problem.strip()}\n\n"
        f"Proposed plan:\n{plan.strip()}\n\n"
        f"Critique:\n{critique.strip()}\n\n"
        "Improved plan:"
    )


def solution_prompt(task_prompt: str, plan: str) -> str:
    """The task's own prompt, preceded by the plan the solution should follow."""
    return (
        "Here is a plan for solving the problem that follows. Implement the plan.\n\n"
        f"Plan:\n{plan.strip()}\n\n"
        f"{task_prompt}"
    )


def normalize(text: str) -> str:
    """A key equal for observations that differ only in case, spacing and final punctuation."""
    return " ".join(text.lower().split()).rstrip(".;:")


def parse_list(text: str, limit: int | None = None) -> list[str]:
    """The items of a numbered or bulleted list in ``text``, distinct, in order.

    Lines that are not list items (a preamble, a closing remark) are ignored; a line
    that continues the previous item (indented, not itself an item) is joined to it.
    """
    items: list[str] = []
    continuing = False
    for line in text.splitlines():
        m = _ITEM.match(line)
        if m:
            items.append(m.group(1).strip())
            continuing = True
        elif continuing and line.startswith((" ", "\t")) and line.strip():
            items[-1] += " " + line.strip()
        else:
            continuing = False
    out, seen = [], set()
    for item in items:
        key = normalize(item)
        if key and key not in seen:
            seen.add(key)
            out.append(item)
    return out[:limit] if limit is not None else out
