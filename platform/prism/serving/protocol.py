"""OpenAI-compatible request bodies (pydantic, validated at the edge).

Unknown fields are ignored, as OpenAI clients send new ones over time; known fields take only
the JSON type the API schema gives them (``"2"`` and ``true`` are no integer, so no token id
either). Fields Prism does not implement and that would change the output (logit_bias, beam
search, ``best_of`` > ``n``) are refused with a clear 400 rather than silently dropped.
Output constraints (``response_format``, ``structured_outputs``, ``guided_*``) and tools are
parsed by :mod:`prism.serving.constraints` and :mod:`prism.serving.tools`.
Every input has a limit: ``n``, prompts × ``n`` per call, seeds
the engine can take, text that UTF-8 can encode (no lone surrogates).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Annotated, Any, Literal, cast

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    field_validator,
    model_validator,
)

from prism.errors import InvalidRequest
from prism.sampling_params import MAX_LOGPROBS, SamplingParams
from prism.serving.constraints import ConstraintFields, ResponseFormat, single_constraint
from prism.serving.tool_calls import ToolCalling
from prism.serving.tools import Tool, ToolChoice, call_grammar
from prism.structured_output import StructuredOutput

MAX_N = 16
MAX_CHOICES = 64
"""Engine requests one API call may start: its prompts times ``n``."""
SEED_RANGE = (-(2**63), 2**63 - 1)
"""Seeds the engine's generators take (a choice's seed is the request's plus its index)."""
UNIMPLEMENTED = ("use_beam_search",)
"""Fields other servers accept that would change the output and Prism does not implement."""


def _encodable(text: str) -> str:
    """Refuse text with lone surrogates (JSON allows ``\\ud800``; no tokenizer does)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as error:
        raise ValueError(f"text holds a lone surrogate at position {error.start}") from None
    return text


def _whole(value: object) -> object:
    """A float without a fraction as its integer: JSON Schema counts ``2.0`` an integer."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


_WHOLE = BeforeValidator(_whole)
# Each integer type carries its bounds before the validator, so the schema shows them.
Int = Annotated[int, _WHOLE]
"""An integer as JSON gives it: ``2`` or ``2.0``, never ``"2"`` or ``true``."""
Count = Annotated[int, Field(ge=1), _WHOLE]
NonNegative = Annotated[int, Field(ge=0), _WHOLE]
Choices = Annotated[int, Field(ge=1, le=MAX_N), _WHOLE]
Seed = Annotated[int, Field(ge=SEED_RANGE[0], le=SEED_RANGE[1]), _WHOLE]
TopLogprobs = Annotated[int, Field(ge=0, le=MAX_LOGPROBS), _WHOLE]
Text = Annotated[str, AfterValidator(_encodable)]
TokenIds = Annotated[list[NonNegative], Field(min_length=1)]
"""A prompt as token ids: at least one (an empty list in a batch is no prompt)."""


_UNION_MEMBER_TAGS = {"str", "int", "float", "bool", "list", "dict", "none"}


def _names_a_field(part: object) -> bool:
    """Whether a part of pydantic's error location is a field or an index, not FastAPI's
    ``body`` or the tag of a union member (``str``, ``function-after[...]``)."""
    if isinstance(part, int):
        return True
    text = str(part)
    return text != "body" and text not in _UNION_MEMBER_TAGS and "[" not in text


def _reach(error: Mapping[str, Any]) -> tuple[int, bool]:
    """How far validation got before ``error``: its depth, then whether the type matched."""
    kind = str(error.get("type", ""))
    return len(error.get("loc", ())), not (kind.endswith("_type") or kind == "none_required")


def invalid_fields(errors: Sequence[Mapping[str, Any]]) -> InvalidRequest:
    """Pydantic's (or FastAPI's) validation errors as one :class:`InvalidRequest`.

    The error that reached furthest is reported (the first of those): the deepest into the
    body and, of those, one about a value of the right type (a number out of range, an empty
    list) over one about a wrong type. For a field that may take several forms, the form the
    client meant got furthest.
    """
    first = max(errors, key=_reach)
    location = [str(part) for part in first.get("loc", ()) if _names_a_field(part)]
    message = first.get("msg", "invalid request").removeprefix("Value error, ")
    if first.get("type") == "json_invalid":
        message = "the request body is not valid JSON"
    param = ".".join(location) or None
    return InvalidRequest(f"{param}: {message}" if param else message, param)


class _Body(BaseModel):
    """A part of a request body: unknown fields ignored, known ones of their JSON type only."""

    model_config = ConfigDict(extra="ignore", strict=True)


class StreamOptions(_Body):
    include_usage: bool = False


class _SamplingFields(_Body, ConstraintFields):
    """Fields shared by completions and chat completions."""

    model: str = Field(min_length=1)
    max_tokens: Count | None = None
    temperature: float | None = Field(None, ge=0.0, le=2.0)
    top_p: float | None = Field(None, gt=0.0, le=1.0)
    n: Choices = 1
    stream: bool = False
    stream_options: StreamOptions | None = None
    stop: Text | list[Text] | None = None
    seed: Seed | None = None
    best_of: Count | None = None
    use_beam_search: bool = False
    presence_penalty: float = Field(0.0, ge=-2.0, le=2.0)
    frequency_penalty: float = Field(0.0, ge=-2.0, le=2.0)
    user: str | None = None
    logit_bias: dict[str, float] | None = None
    # Prism extensions, as other open servers accept them
    top_k: NonNegative = 0
    min_p: float = Field(0.0, ge=0.0, le=1.0)
    repetition_penalty: float = Field(1.0, gt=0.0)
    min_tokens: NonNegative = 0
    ignore_eos: bool = False
    stop_token_ids: list[Int] | None = None
    cache_salt: str | None = None

    @field_validator(*UNIMPLEMENTED)
    @classmethod
    def _refuse_unimplemented(cls, value: Any) -> Any:
        if value not in (None, False):
            raise ValueError("is not supported by Prism")
        return value

    @model_validator(mode="after")
    def _refuse_unsupported(self) -> _SamplingFields:
        if self.logit_bias:
            raise ValueError("logit_bias is not supported")
        if self.best_of is not None and self.best_of > self.n:
            raise ValueError("best_of greater than n is not supported")
        if self.stream_options is not None and not self.stream:
            raise ValueError("stream_options is only allowed when stream is true")
        if isinstance(self.stop, list) and len(self.stop) > 4:
            raise ValueError("at most 4 stop sequences are allowed")
        self.constraint()  # at most one
        return self

    def constraint(self) -> StructuredOutput | None:
        """The request's output constraint, if it has one (a ``ValueError`` for several)."""
        return single_constraint(self.requested_constraints())

    @property
    def include_usage(self) -> bool:
        return self.stream_options is not None and self.stream_options.include_usage

    def sampling_params(self, max_tokens: int | None, logprobs: int | None) -> SamplingParams:
        stop = [self.stop] if isinstance(self.stop, str) else list(self.stop or [])
        return SamplingParams(
            max_tokens=max_tokens,
            min_tokens=self.min_tokens,
            temperature=1.0 if self.temperature is None else self.temperature,
            top_k=self.top_k,
            top_p=1.0 if self.top_p is None else self.top_p,
            min_p=self.min_p,
            seed=self.seed,
            repetition_penalty=self.repetition_penalty,
            presence_penalty=self.presence_penalty,
            frequency_penalty=self.frequency_penalty,
            stop=stop,
            stop_token_ids=list(self.stop_token_ids or []),
            ignore_eos=self.ignore_eos,
            logprobs=logprobs,
            structured=self.constraint(),
        )


class CompletionRequest(_SamplingFields):
    prompt: Text | list[Text] | TokenIds | list[TokenIds]
    max_tokens: Count | None = 16
    logprobs: TopLogprobs | None = None
    echo: bool = False
    suffix: str | None = None

    @model_validator(mode="after")
    def _refuse_completion_extras(self) -> CompletionRequest:
        if self.echo:
            raise ValueError("echo is not supported")
        if self.suffix:
            raise ValueError("suffix is not supported")
        prompts = self._num_prompts
        if prompts * self.n > MAX_CHOICES:
            raise ValueError(
                f"{prompts} prompts x n={self.n} would start {prompts * self.n} requests; "
                f"at most {MAX_CHOICES} per call"
            )
        return self

    @property
    def _num_prompts(self) -> int:
        """1 for a text or token-id prompt, else the batch's length."""
        prompt = self.prompt
        if isinstance(prompt, str) or not prompt or isinstance(prompt[0], int):
            return 1
        return len(prompt)

    def prompts(self) -> list[str | list[int]]:
        """The prompts of this request: one, or several for a batch."""
        prompt = self.prompt
        if isinstance(prompt, str):
            return [prompt]
        if not prompt:
            raise InvalidRequest("prompt must not be empty", "prompt")
        if isinstance(prompt[0], int):
            return [cast("list[int]", prompt)]
        return cast("list[str | list[int]]", prompt)


class TextPart(_Body):
    type: Literal["text"]
    text: Text


class CalledFunction(_Body):
    name: str
    arguments: str


class MessageToolCall(_Body):
    id: str
    type: Literal["function"] = "function"
    function: CalledFunction


class ChatMessage(_Body):
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: Text | list[TextPart] | None = None
    name: str | None = None
    tool_calls: list[MessageToolCall] | None = None
    tool_call_id: str | None = None

    @model_validator(mode="after")
    def _tool_fields_in_their_roles(self) -> ChatMessage:
        if self.tool_calls and self.role != "assistant":
            raise ValueError("only assistant messages carry tool_calls")
        if (self.role == "tool") != (self.tool_call_id is not None):
            raise ValueError("tool messages, and only they, need a tool_call_id")
        return self

    def text(self) -> str:
        if self.content is None:
            return ""
        if isinstance(self.content, str):
            return self.content
        return "".join(part.text for part in self.content)


class ChatCompletionRequest(_SamplingFields):
    messages: list[ChatMessage] = Field(min_length=1)
    max_completion_tokens: Count | None = None
    logprobs: bool = False
    top_logprobs: TopLogprobs | None = None
    tools: list[Tool] | None = Field(None, max_length=128)
    tool_choice: ToolChoice | None = None
    parallel_tool_calls: bool = True
    response_format: ResponseFormat | None = None

    @model_validator(mode="after")
    def _check_chat_extras(self) -> ChatCompletionRequest:
        if self.top_logprobs and not self.logprobs:
            raise ValueError("top_logprobs needs logprobs set to true")
        names = [tool.function.name for tool in self.tools or []]
        if len(set(names)) != len(names):
            raise ValueError("tools: function names must be unique")
        if self.tool_choice not in (None, "none") and not names:
            raise ValueError("tool_choice needs tools")
        named = self.named_tool
        if named is not None and named not in names:
            raise ValueError(f"tool_choice names {named!r}, which is not among the tools")
        return self

    @property
    def named_tool(self) -> str | None:
        choice = self.tool_choice
        return None if choice is None or isinstance(choice, str) else choice.function.name

    @property
    def offered_tools(self) -> list[Tool]:
        """The tools the model is told about: none when ``tool_choice`` is ``none``."""
        if not self.tools or self.tool_choice == "none":
            return []
        named = self.named_tool
        return [t for t in self.tools if named is None or t.function.name == named]

    @property
    def tool_calls_enforced(self) -> bool:
        """Whether a grammar forces the reply to be tool calls."""
        return bool(self.offered_tools) and self.tool_choice not in (None, "auto")

    @property
    def tool_calling(self) -> ToolCalling | None:
        """How to read the reply for tool calls (None: no tools are offered)."""
        names = frozenset(tool.function.name for tool in self.offered_tools)
        return ToolCalling(names, self.tool_calls_enforced) if names else None

    def constraint(self) -> StructuredOutput | None:
        found = self.requested_constraints()
        if self.response_format is not None:
            format_constraint = self.response_format.constraint()
            if format_constraint is not None:
                found.append(("response_format", format_constraint))
        if self.tool_calls_enforced:
            parallel = self.parallel_tool_calls and self.named_tool is None
            found.append(("tool_choice", call_grammar(self.offered_tools, parallel)))
        return single_constraint(found)

    @property
    def output_limit(self) -> int | None:
        return self.max_completion_tokens or self.max_tokens

    @property
    def logprobs_count(self) -> int | None:
        return (self.top_logprobs or 0) if self.logprobs else None

    def chat_messages(self) -> list[dict[str, Any]]:
        """Messages as chat templates want them (``developer`` is a system message)."""
        messages = []
        for m in self.messages:
            message: dict[str, Any] = {
                "role": "system" if m.role == "developer" else m.role,
                "content": m.text(),
            }
            if m.tool_calls:
                message["tool_calls"] = [call.model_dump() for call in m.tool_calls]
            if m.tool_call_id is not None:
                message["tool_call_id"] = m.tool_call_id
            messages.append(message)
        return messages
