"""OpenAI-compatible request bodies (pydantic, validated at the edge).

Unknown fields are ignored, as OpenAI clients send new ones over time; fields Prism does not
implement and that would change the output (tools, logit_bias, structured output, beam
search, ``best_of`` > ``n``) are refused with a clear 400 rather than silently dropped. Every
input has a limit: ``n``, prompts × ``n`` per call, seeds the engine can take, text that
UTF-8 can encode (no lone surrogates).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Annotated, Any, Literal, cast

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator, model_validator

from prism.errors import InvalidRequest
from prism.sampling_params import SamplingParams

MAX_N = 16
MAX_CHOICES = 64
"""Engine requests one API call may start: its prompts times ``n``."""
SEED_RANGE = (-(2**63), 2**63 - 1)
"""Seeds the engine's generators take (a choice's seed is the request's plus its index)."""
UNIMPLEMENTED = (
    "use_beam_search",
    "guided_json",
    "guided_regex",
    "guided_choice",
    "guided_grammar",
    "structured_outputs",
)
"""Fields other servers accept that would change the output and Prism does not implement."""


def _encodable(text: str) -> str:
    """Refuse text with lone surrogates (JSON allows ``\\ud800``; no tokenizer does)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as error:
        raise ValueError(f"text holds a lone surrogate at position {error.start}") from None
    return text


Text = Annotated[str, AfterValidator(_encodable)]
TokenIds = list[Annotated[int, Field(ge=0)]]


_UNION_MEMBER_TAGS = {"str", "int", "float", "bool", "list", "dict", "none"}


def _names_a_field(part: object) -> bool:
    """Whether a part of pydantic's error location is a field or an index, not FastAPI's
    ``body`` or the tag of a union member (``str``, ``function-after[...]``)."""
    if isinstance(part, int):
        return True
    text = str(part)
    return text != "body" and text not in _UNION_MEMBER_TAGS and "[" not in text


def invalid_fields(errors: Sequence[Mapping[str, Any]]) -> InvalidRequest:
    """Pydantic's (or FastAPI's) validation errors as one :class:`InvalidRequest`.

    The error that reached deepest into the body is reported (the first of those): for a
    field that may take several forms, the form the client meant got furthest.
    """
    first = max(errors, key=lambda error: len(error.get("loc", ())))
    location = [str(part) for part in first.get("loc", ()) if _names_a_field(part)]
    message = first.get("msg", "invalid request").removeprefix("Value error, ")
    if first.get("type") == "json_invalid":
        message = "the request body is not valid JSON"
    param = ".".join(location) or None
    return InvalidRequest(f"{param}: {message}" if param else message, param)


class StreamOptions(BaseModel):
    include_usage: bool = False


class _SamplingFields(BaseModel):
    """Fields shared by completions and chat completions."""

    model_config = ConfigDict(extra="ignore")

    model: str = Field(min_length=1)
    max_tokens: int | None = Field(None, ge=1)
    temperature: float | None = Field(None, ge=0.0, le=2.0)
    top_p: float | None = Field(None, gt=0.0, le=1.0)
    n: int = Field(1, ge=1, le=MAX_N)
    stream: bool = False
    stream_options: StreamOptions | None = None
    stop: Text | list[Text] | None = None
    seed: int | None = Field(None, ge=SEED_RANGE[0], le=SEED_RANGE[1])
    best_of: int | None = Field(None, ge=1)
    use_beam_search: bool = False
    guided_json: Any = None
    guided_regex: Any = None
    guided_choice: Any = None
    guided_grammar: Any = None
    structured_outputs: Any = None
    presence_penalty: float = Field(0.0, ge=-2.0, le=2.0)
    frequency_penalty: float = Field(0.0, ge=-2.0, le=2.0)
    user: str | None = None
    logit_bias: dict[str, float] | None = None
    # Prism extensions, as other open servers accept them
    top_k: int = Field(0, ge=0)
    min_p: float = Field(0.0, ge=0.0, le=1.0)
    repetition_penalty: float = Field(1.0, gt=0.0)
    min_tokens: int = Field(0, ge=0)
    ignore_eos: bool = False
    stop_token_ids: list[int] | None = None
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
        return self

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
        )


class CompletionRequest(_SamplingFields):
    prompt: Text | list[Text] | TokenIds | list[TokenIds]
    max_tokens: int | None = Field(16, ge=1)
    logprobs: int | None = Field(None, ge=0, le=20)
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


class TextPart(BaseModel):
    type: Literal["text"]
    text: Text


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="ignore")

    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: Text | list[TextPart] | None = None
    name: str | None = None

    def text(self) -> str:
        if self.content is None:
            return ""
        if isinstance(self.content, str):
            return self.content
        return "".join(part.text for part in self.content)


class ChatCompletionRequest(_SamplingFields):
    messages: list[ChatMessage] = Field(min_length=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    logprobs: bool = False
    top_logprobs: int | None = Field(None, ge=0, le=20)
    tools: list[Any] | None = None
    tool_choice: Any | None = None
    response_format: dict[str, Any] | None = None

    @model_validator(mode="after")
    def _refuse_chat_extras(self) -> ChatCompletionRequest:
        if self.tools or self.tool_choice not in (None, "none"):
            raise ValueError("tools and tool_choice are not supported")
        if self.response_format and self.response_format.get("type") != "text":
            raise ValueError("only response_format type 'text' is supported")
        if self.top_logprobs and not self.logprobs:
            raise ValueError("top_logprobs needs logprobs set to true")
        return self

    @property
    def output_limit(self) -> int | None:
        return self.max_completion_tokens or self.max_tokens

    @property
    def logprobs_count(self) -> int | None:
        return (self.top_logprobs or 0) if self.logprobs else None

    def chat_messages(self) -> list[dict[str, str]]:
        """Messages as the chat template wants them (``developer`` is a system message)."""
        return [
            {"role": "system" if m.role == "developer" else m.role, "content": m.text()}
            for m in self.messages
        ]
