"""Finding tool calls in a model's output, as it streams or all at once.

A call is a block ``<tool_call>{"name": ..., "arguments": {...}}</tool_call>``: the format
that Hermes-style chat templates (Qwen2, Qwen2.5, Qwen3 and others) teach, and that Prism's
own tool prompt asks for. Text outside the blocks is the message's content.

One :class:`ToolCallParser` serves both response forms: a whole response feeds it the whole
text, a stream feeds it each delta, and the calls come out the same. When a grammar enforces
the call format, a call's arguments stream as they are generated; otherwise each call comes
out whole once its block closes and parses, and a block that does not parse stays content.
"""

from __future__ import annotations

import json
import re
import uuid
from dataclasses import dataclass, field

TOOL_CALL_OPEN = "<tool_call>"
TOOL_CALL_CLOSE = "</tool_call>"
_CALL_HEAD = re.compile(r'\s*\{\s*"name"\s*:\s*"([^"\\]+)"\s*,\s*"arguments"\s*:\s*')


@dataclass(slots=True)
class ToolCallDelta:
    """A piece of one tool call: its first piece has the id and name, later ones arguments."""

    index: int
    arguments: str
    id: str | None = None
    name: str | None = None

    def body(self) -> dict:
        """The OpenAI ``delta.tool_calls`` item."""
        item: dict = {"index": self.index}
        if self.id is not None:
            item |= {"id": self.id, "type": "function"}
        function: dict = {"arguments": self.arguments}
        if self.name is not None:
            function = {"name": self.name, **function}
        return item | {"function": function}


@dataclass(slots=True)
class ParsedText:
    """What a piece of output adds: content text and tool-call pieces."""

    content: str = ""
    calls: list[ToolCallDelta] = field(default_factory=list)


def _held_prefix(text: str, marker: str) -> int:
    """Length of the longest end of ``text`` that could begin ``marker``."""
    for length in range(min(len(text), len(marker) - 1), 0, -1):
        if marker.startswith(text[-length:]):
            return length
    return 0


class ToolCallParser:
    """Splits output text into content and tool calls (see the module)."""

    def __init__(self, tool_names: set[str], stream_arguments: bool) -> None:
        self.tool_names = tool_names
        self.stream_arguments = stream_arguments
        self.num_calls = 0
        self._pending = ""
        self._in_call = False
        self._call_text = ""
        self._call_id: str | None = None
        self._sent_arguments = 0

    def feed(self, text: str) -> ParsedText:
        """Parse ``text``, the output's next piece."""
        parsed = ParsedText()
        self._pending += text
        while self._pending:
            if not self._in_call:
                start = self._pending.find(TOOL_CALL_OPEN)
                if start < 0:
                    keep = _held_prefix(self._pending, TOOL_CALL_OPEN)
                    parsed.content += self._pending[: len(self._pending) - keep]
                    self._pending = self._pending[len(self._pending) - keep :]
                    break
                parsed.content += self._pending[:start]
                self._pending = self._pending[start + len(TOOL_CALL_OPEN) :]
                self._in_call, self._call_text = True, ""
                continue
            end = self._pending.find(TOOL_CALL_CLOSE)
            if end < 0:
                keep = _held_prefix(self._pending, TOOL_CALL_CLOSE)
                self._call_text += self._pending[: len(self._pending) - keep]
                self._pending = self._pending[len(self._pending) - keep :]
                if self.stream_arguments:
                    parsed.calls += self._partial_call()
                break
            self._call_text += self._pending[:end]
            self._pending = self._pending[end + len(TOOL_CALL_CLOSE) :]
            self._close_call(parsed)
        return parsed

    def finish(self) -> ParsedText:
        """The end of the output: what was held back, and an unclosed block as it stands."""
        parsed = ParsedText()
        if self._in_call and self._call_id is not None:
            self._call_text += self._pending
            parsed.calls += self._partial_call()
        elif self._in_call:
            parsed.content += TOOL_CALL_OPEN + self._call_text + self._pending
        else:
            parsed.content += self._pending
        self._pending, self._in_call = "", False
        return parsed

    def _partial_call(self) -> list[ToolCallDelta]:
        """While a block is open: its name once known, then the arguments that are safe to
        send (never the block's closing brace, nor trailing whitespace)."""
        head = _CALL_HEAD.match(self._call_text)
        if head is None or head.group(1) not in self.tool_names:
            return []
        deltas = []
        if self._call_id is None:
            self._call_id = f"call_{uuid.uuid4().hex[:24]}"
            deltas.append(ToolCallDelta(self.num_calls, "", self._call_id, head.group(1)))
        arguments = self._call_text[head.end() :]
        last_brace = arguments.rfind("}")
        if last_brace >= 0 and not arguments[last_brace + 1 :].strip():
            arguments = arguments[:last_brace]
        arguments = arguments.rstrip()
        if len(arguments) > self._sent_arguments:
            deltas.append(ToolCallDelta(self.num_calls, arguments[self._sent_arguments :]))
            self._sent_arguments = len(arguments)
        return deltas

    def _close_call(self, parsed: ParsedText) -> None:
        call = self._whole_call()
        if self._call_id is not None:  # its name and arguments were streamed
            arguments = call[1] if call is not None else ""
            if len(arguments) > self._sent_arguments:
                parsed.calls.append(
                    ToolCallDelta(self.num_calls, arguments[self._sent_arguments :])
                )
            self._next_call()
        elif call is not None:
            call_id = f"call_{uuid.uuid4().hex[:24]}"
            parsed.calls.append(ToolCallDelta(self.num_calls, call[1], call_id, call[0]))
            self._next_call()
        else:
            parsed.content += TOOL_CALL_OPEN + self._call_text + TOOL_CALL_CLOSE
        self._in_call, self._call_text = False, ""

    def _next_call(self) -> None:
        self.num_calls += 1
        self._call_id, self._sent_arguments = None, 0

    def _whole_call(self) -> tuple[str, str] | None:
        """The closed block's name and arguments text, if it is a call of a known tool."""
        try:
            call = json.loads(self._call_text)
        except json.JSONDecodeError:
            return None
        if not isinstance(call, dict) or call.get("name") not in self.tool_names:
            return None
        arguments = call.get("arguments", call.get("parameters", {}))
        if not isinstance(arguments, dict):
            return None
        head = _CALL_HEAD.match(self._call_text)
        if head is not None:  # the arguments as generated, when they can be cut out whole
            raw = self._call_text[head.end() : self._call_text.rfind("}")].rstrip()
            try:
                if json.loads(raw) == arguments:
                    return call["name"], raw
            except json.JSONDecodeError:
                pass
        return call["name"], json.dumps(arguments)


@dataclass(frozen=True, slots=True)
class ToolCalling:
    """A chat's tools: the names calls may use, and whether a grammar enforces the format."""

    names: frozenset[str]
    enforced: bool

    def parser(self) -> ToolCallParser:
        return ToolCallParser(set(self.names), stream_arguments=self.enforced)


def whole_output(parser: ToolCallParser, text: str) -> tuple[str | None, list[dict]]:
    """A whole response's content (None if only whitespace) and its ``tool_calls``."""
    first, last = parser.feed(text), parser.finish()
    content = first.content + last.content
    calls: dict[int, dict] = {}
    for delta in first.calls + last.calls:
        call = calls.setdefault(
            delta.index, {"id": delta.id, "type": "function", "function": {"name": delta.name}}
        )
        function = call["function"]
        function["arguments"] = function.get("arguments", "") + delta.arguments
    return (content if content.strip() else None), [calls[index] for index in sorted(calls)]
