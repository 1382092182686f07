"""Tools in chat requests: their definitions, the choice, the prompt that offers them, and the
grammar that forces a call.

A chat template that knows tools (it mentions ``tools``) renders them, the assistant's earlier
calls and the tool results itself. For any other template Prism writes the tools into the
system message (:data:`TOOL_PROMPT`), and renders earlier calls as ``<tool_call>`` blocks and
results as user turns in ``<tool_response>`` blocks: roles every template knows.

``tool_choice`` ``required`` and a named function are enforced by a grammar: one call (or,
with ``parallel_tool_calls``, one or more) in the ``<tool_call>`` format, each naming an
offered function with arguments that match its parameter schema.
"""

from __future__ import annotations

import json
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from prism.serving.constraints import JSONSchema
from prism.serving.tool_calls import TOOL_CALL_CLOSE, TOOL_CALL_OPEN
from prism.structured_output import StructuredOutput

ANY_ARGUMENTS: dict[str, Any] = {"type": "object"}

TOOL_PROMPT = """You can call functions to help answer. To call one, reply with a block:
<tool_call>
{{"name": "<function name>", "arguments": {{<arguments as a JSON object>}}}}
</tool_call>
Results come back in <tool_response> blocks. The functions:
{functions}"""
"""The system-prompt text offering tools to a model whose chat template cannot."""


class _Part(BaseModel):
    model_config = ConfigDict(extra="ignore", strict=True)


class FunctionDefinition(_Part):
    name: str = Field(pattern=r"^[A-Za-z0-9_-]{1,64}$")
    description: str | None = None
    parameters: JSONSchema | None = None
    strict: bool | None = None

    def parameter_schema(self) -> Any:
        if isinstance(self.parameters, str):
            return json.loads(self.parameters)
        return ANY_ARGUMENTS if self.parameters is None else self.parameters

    def offer(self) -> dict[str, Any]:
        """The definition as chat templates and the tool prompt show it."""
        definition: dict[str, Any] = {"name": self.name}
        if self.description:
            definition["description"] = self.description
        return definition | {"parameters": self.parameter_schema()}


class Tool(_Part):
    type: Literal["function"]
    function: FunctionDefinition


class FunctionName(_Part):
    name: str


class NamedToolChoice(_Part):
    type: Literal["function"]
    function: FunctionName


ToolChoice = Literal["none", "auto", "required"] | NamedToolChoice


def call_grammar(tools: list[Tool], parallel: bool) -> StructuredOutput:
    """The grammar of a reply made of tool calls to ``tools`` (one, or several if
    ``parallel``), each call's JSON compact and its arguments valid for its function."""
    call_schemas = [
        {
            "type": "object",
            "properties": {
                "name": {"const": tool.function.name},
                "arguments": tool.function.parameter_schema(),
            },
            "required": ["name", "arguments"],
            "additionalProperties": False,
        }
        for tool in tools
    ]
    schema = {"anyOf": call_schemas, "x-guidance": {"whitespace_flexible": False}}
    calls = 'call ("\\n" call)*' if parallel else "call"
    open_text, close_text = json.dumps(TOOL_CALL_OPEN + "\n"), json.dumps("\n" + TOOL_CALL_CLOSE)
    return StructuredOutput.grammar(
        f"start: {calls}\ncall: {open_text} %json {json.dumps(schema)} {close_text}\n"
    )


def template_knows_tools(chat_template: str | None) -> bool:
    """Whether a chat template renders tools itself."""
    return bool(chat_template) and "tools" in str(chat_template)


def _arguments(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def for_template(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Messages for a template that knows tools: earlier calls' arguments as objects."""
    rendered = []
    for message in messages:
        calls = message.get("tool_calls")
        if calls:
            message = message | {
                "tool_calls": [
                    call
                    | {
                        "function": call["function"]
                        | {"arguments": _arguments(call["function"]["arguments"])}
                    }
                    for call in calls
                ]
            }
        rendered.append(message)
    return rendered


def call_block(name: str, arguments: str) -> str:
    body = json.dumps({"name": name, "arguments": _arguments(arguments)})
    return f"{TOOL_CALL_OPEN}\n{body}\n{TOOL_CALL_CLOSE}"


def without_tool_roles(
    messages: list[dict[str, Any]], tools: list[Tool] | None
) -> list[dict[str, str]]:
    """Messages for a template that knows no tools: the tools in the system message, calls
    as blocks in the assistant's text, results as user turns."""
    plain: list[dict[str, str]] = []
    for message in messages:
        content = message.get("content") or ""
        if message["role"] == "tool":
            plain.append(
                {"role": "user", "content": f"<tool_response>\n{content}\n</tool_response>"}
            )
            continue
        blocks = [
            call_block(call["function"]["name"], call["function"]["arguments"])
            for call in message.get("tool_calls") or []
        ]
        plain.append({"role": message["role"], "content": "\n".join([content, *blocks]).strip()})
    if tools:
        functions = "\n".join(json.dumps(tool.function.offer()) for tool in tools)
        offer = TOOL_PROMPT.format(functions=functions)
        if plain and plain[0]["role"] == "system":
            plain[0] = {"role": "system", "content": f"{plain[0]['content']}\n\n{offer}"}
        else:
            plain.insert(0, {"role": "system", "content": offer})
    return plain


def template_inputs(
    chat_template: str | None, messages: list[dict[str, Any]], tools: list[Tool] | None
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The messages and tool definitions to hand a chat template (see the module)."""
    if template_knows_tools(chat_template):
        offered = [{"type": "function", "function": t.function.offer()} for t in tools or []]
        return for_template(messages), offered
    return without_tool_roles(messages, tools), []
