"""The request fields that constrain the output, and the one constraint they add up to.

OpenAI's ``response_format`` (``json_object``, ``json_schema``) for chats; for completions and
chats, ``structured_outputs`` (``json``, ``regex``, ``choice``, ``grammar``, ``json_object``)
and the older ``guided_json``, ``guided_regex``, ``guided_choice`` and ``guided_grammar``,
under the names other open servers give them. Each constraint is checked where it is parsed,
so a bad schema is a 400 naming its field.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator

from prism.errors import InvalidRequest
from prism.structured_output import StructuredOutput


def _compiles(make: Callable[[Any], StructuredOutput]) -> Callable[[Any], Any]:
    """A field validator: the value if ``make(value)`` compiles, else a ``ValueError`` (a 400
    naming the field) saying why."""

    def validate(value: Any) -> Any:
        try:
            make(value).check()
        except InvalidRequest as error:
            raise ValueError(str(error)) from None
        return value

    return validate


JSONSchema = Annotated[
    dict[str, Any] | str, AfterValidator(_compiles(StructuredOutput.json_schema))
]
"""A JSON schema, as an object or as JSON text."""
Regex = Annotated[str, AfterValidator(_compiles(StructuredOutput.regex))]
Choice = Annotated[
    list[str], Field(min_length=1), AfterValidator(_compiles(StructuredOutput.choice))
]
Grammar = Annotated[str, Field(min_length=1), AfterValidator(_compiles(StructuredOutput.grammar))]


class StructuredOutputs(BaseModel):
    """``structured_outputs``: exactly one constraint. Unknown keys are refused, not ignored:
    each of them would change what the output may be."""

    model_config = ConfigDict(extra="forbid", strict=True, populate_by_name=True)

    json_schema: JSONSchema | None = Field(None, alias="json")
    regex: Regex | None = None
    choice: Choice | None = None
    grammar: Grammar | None = None
    json_object: bool | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> StructuredOutputs:
        given = [
            name
            for name in ("json_schema", "regex", "choice", "grammar")
            if getattr(self, name) is not None
        ] + (["json_object"] if self.json_object else [])
        if len(given) != 1:
            raise ValueError("give exactly one of json, regex, choice, grammar or json_object")
        return self

    def constraint(self) -> StructuredOutput:
        if self.json_schema is not None:
            return StructuredOutput.json_schema(self.json_schema)
        if self.regex is not None:
            return StructuredOutput.regex(self.regex)
        if self.choice is not None:
            return StructuredOutput.choice(self.choice)
        if self.grammar is not None:
            return StructuredOutput.grammar(self.grammar)
        return StructuredOutput.json_object()


class JSONSchemaFormat(BaseModel):
    """``response_format.json_schema``; the schema is always enforced, ``strict`` or not."""

    model_config = ConfigDict(extra="ignore", strict=True, populate_by_name=True)

    name: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_-]+$")
    description: str | None = None
    json_schema: JSONSchema | None = Field(None, alias="schema")
    strict: bool | None = None


class ResponseFormat(BaseModel):
    model_config = ConfigDict(extra="ignore", strict=True)

    type: Literal["text", "json_object", "json_schema"]
    json_schema: JSONSchemaFormat | None = None

    @model_validator(mode="after")
    def _schema_with_its_type(self) -> ResponseFormat:
        if (self.type == "json_schema") != (self.json_schema is not None):
            raise ValueError("json_schema is required with type json_schema, and only there")
        return self

    def constraint(self) -> StructuredOutput | None:
        if self.type == "text":
            return None
        if self.json_schema is not None and self.json_schema.json_schema is not None:
            return StructuredOutput.json_schema(self.json_schema.json_schema)
        return StructuredOutput.json_object()


class ConstraintFields(BaseModel):
    """The constraint fields of completions and chats (mixed into their request bodies)."""

    structured_outputs: StructuredOutputs | None = None
    guided_json: JSONSchema | None = None
    guided_regex: Regex | None = None
    guided_choice: Choice | None = None
    guided_grammar: Grammar | None = None

    def requested_constraints(self) -> list[tuple[str, StructuredOutput]]:
        """Every constraint the body asks for, with the field that asks."""
        found: list[tuple[str, StructuredOutput]] = []
        if self.structured_outputs is not None:
            found.append(("structured_outputs", self.structured_outputs.constraint()))
        if self.guided_json is not None:
            found.append(("guided_json", StructuredOutput.json_schema(self.guided_json)))
        if self.guided_regex is not None:
            found.append(("guided_regex", StructuredOutput.regex(self.guided_regex)))
        if self.guided_choice is not None:
            found.append(("guided_choice", StructuredOutput.choice(self.guided_choice)))
        if self.guided_grammar is not None:
            found.append(("guided_grammar", StructuredOutput.grammar(self.guided_grammar)))
        return found


def single_constraint(found: list[tuple[str, StructuredOutput]]) -> StructuredOutput | None:
    """The one constraint of a request; a ``ValueError`` if it asks for several."""
    if len(found) > 1:
        names = ", ".join(name for name, _ in found)
        raise ValueError(f"at most one output constraint per request; this one sets {names}")
    return found[0][1] if found else None
