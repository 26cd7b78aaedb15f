"""Server-sent events in OpenAI's streaming shape, for chat and completions.

A chat stream opens each choice with a ``{"role": "assistant"}`` delta, carries the text
in ``content`` deltas, closes each choice with an empty delta and its finish reason and,
with ``stream_options.include_usage``, ends with a chunk whose ``choices`` is empty and
whose ``usage`` counts every token of the request (every other chunk then carries
``"usage": null``). A completions stream carries ``text`` instead of deltas. ttc's own
``ttc`` field rides on the last chunk. ``data: [DONE]`` ends every stream, an error
included (sent as one ``{"error": ...}`` event).
"""

from __future__ import annotations

import json
import time
from typing import Any

from ..chat import openai_finish, usage_object

__all__ = ["DONE", "StreamFormat", "sse"]

DONE = "data: [DONE]\n\n"


def sse(obj: Any) -> str:
    """One ``data:`` event."""
    return f"data: {json.dumps(obj, separators=(',', ':'))}\n\n"


class StreamFormat:
    """Builds the chunks of one streamed response.

    Args:
        kind: ``chat`` or ``completion``.
        request_id: The response id (``chatcmpl-...`` / ``cmpl-...`` is prefixed here).
        model: The model name echoed back.
        include_usage: Whether the stream ends with a usage chunk.
    """

    def __init__(self, kind: str, request_id: str, model: str, include_usage: bool):
        self.kind, self.model, self.include_usage = kind, model, include_usage
        self.id = f"chatcmpl-{request_id}" if kind == "chat" else f"cmpl-{request_id}"
        self.object = "chat.completion.chunk" if kind == "chat" else "text_completion"
        self.created = int(time.time())

    def _chunk(self, choices: list[dict[str, Any]], **extra: Any) -> str:
        obj: dict[str, Any] = {"id": self.id, "object": self.object, "created": self.created, "model": self.model,
                               "choices": choices}
        if self.include_usage:
            obj["usage"] = None
        obj.update(extra)
        return sse(obj)

    def start(self, index: int) -> str | None:
        """A chat choice's opening role delta (completions have none)."""
        if self.kind != "chat":
            return None
        return self._chunk([{"index": index, "delta": {"role": "assistant", "content": ""}, "logprobs": None,
                             "finish_reason": None}])

    def delta(self, index: int, text: str) -> str:
        """Text of choice ``index``."""
        if self.kind == "chat":
            return self._chunk([{"index": index, "delta": {"content": text}, "logprobs": None,
                                 "finish_reason": None}])
        return self._chunk([{"index": index, "text": text, "logprobs": None, "finish_reason": None}])

    def finish(self, index: int, reason: str | None, ttc: dict[str, Any] | None = None) -> str:
        """The chunk that ends choice ``index``; the last one also carries the ``ttc`` field."""
        extra = {"ttc": ttc} if ttc is not None else {}
        if self.kind == "chat":
            return self._chunk([{"index": index, "delta": {}, "logprobs": None,
                                 "finish_reason": openai_finish(reason)}], **extra)
        return self._chunk([{"index": index, "text": "", "logprobs": None, "finish_reason": openai_finish(reason)}],
                           **extra)

    def usage(self, usage: dict[str, int], ttc: dict[str, Any]) -> str | None:
        """The final usage chunk, when the request asked for one."""
        if not self.include_usage:
            return None
        return sse({"id": self.id, "object": self.object, "created": self.created, "model": self.model,
                    "choices": [], "usage": usage_object(usage), "ttc": ttc})
