"""Constraints on a request's output: a JSON schema, any JSON object, a regex, a choice of
strings, or a grammar.

A constraint travels with the sampling parameters as its source text. The grammar library
(llguidance) turns it into a grammar without knowing the tokenizer, so the ingress checks a
request's constraint before routing it (a bad schema is a 400 there); a replica's engine then
compiles it for its own tokenizer. No torch here: the ingress imports this module.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import llguidance

from prism.errors import InvalidRequest

ConstraintKind = Literal["json", "json_object", "regex", "choice", "grammar"]

JSON_OPTIONS: Any = {"whitespace_flexible": False}
"""JSON comes out compact (``,`` and ``:`` with no spaces, no newlines): a small model at
a high temperature cannot then wander off into whitespace until ``max_tokens`` runs out. A
schema may ask otherwise with llguidance's ``x-guidance`` key."""

ANY_JSON_OBJECT = {"type": "object"}


@dataclass(frozen=True, slots=True)
class StructuredOutput:
    """One request's output constraint.

    ``spec`` is the JSON schema as JSON text (``json``), the regex (``regex``), the choices
    as a JSON list (``choice``), the Lark or GBNF grammar (``grammar``), or empty
    (``json_object``). Equal constraints compile to the same grammar, so engines cache
    compiled grammars by this value.
    """

    kind: ConstraintKind
    spec: str = ""

    @classmethod
    def json_schema(cls, schema: Mapping[str, Any] | str | bool) -> StructuredOutput:
        """A JSON schema, given as an object or as JSON text (keys keep their order)."""
        if isinstance(schema, str):
            try:
                schema = json.loads(schema)
            except json.JSONDecodeError as error:
                raise InvalidRequest(f"the JSON schema is not valid JSON: {error}") from None
        if schema is True:
            schema = {}  # any JSON value
        if schema is False:
            raise InvalidRequest("the JSON schema false allows no output at all")
        if not isinstance(schema, Mapping):
            raise InvalidRequest("a JSON schema must be an object")
        return cls("json", json.dumps(schema, separators=(",", ":")))

    @classmethod
    def json_object(cls) -> StructuredOutput:
        return cls("json_object")

    @classmethod
    def regex(cls, pattern: str) -> StructuredOutput:
        return cls("regex", pattern)

    @classmethod
    def choice(cls, options: Sequence[str]) -> StructuredOutput:
        """Exactly one of ``options`` (non-empty strings)."""
        if not options or any(not isinstance(o, str) or not o for o in options):
            raise InvalidRequest("a choice needs one or more non-empty strings")
        return cls("choice", json.dumps(list(options)))

    @classmethod
    def grammar(cls, text: str) -> StructuredOutput:
        """A context-free grammar in Lark syntax (llguidance's), or GBNF as llama.cpp writes it."""
        return cls("grammar", text)

    def llguidance_grammar(self) -> str:
        """The constraint as an llguidance grammar (not yet checked: see :meth:`check`)."""
        try:
            return self._llguidance_grammar()
        except ValueError as error:
            raise InvalidRequest(f"{self.describe()} is not valid: {error}") from None

    def _llguidance_grammar(self) -> str:
        if self.kind == "json_object":
            return llguidance.LLMatcher.grammar_from_json_schema(ANY_JSON_OBJECT, JSON_OPTIONS)
        if self.kind == "json":
            return llguidance.LLMatcher.grammar_from_json_schema(self.spec, JSON_OPTIONS)
        if self.kind == "regex":
            return llguidance.LLMatcher.grammar_from_regex(self.spec)
        if self.kind == "choice":
            alternatives = " | ".join(json.dumps(o) for o in json.loads(self.spec))
            return llguidance.LLMatcher.grammar_from_lark(f"start: {alternatives}")
        return llguidance.grammar_from("grammar", self.spec)

    def check(self, param: str | None = None) -> None:
        """Raise :class:`InvalidRequest` (naming ``param``) if the constraint cannot compile:
        an invalid schema, regex or grammar, or a JSON Schema feature llguidance does not
        enforce (reported, never ignored)."""
        try:
            problem = llguidance.LLMatcher.validate_grammar(self.llguidance_grammar())
        except InvalidRequest as error:
            raise InvalidRequest(str(error), param) from None
        if problem:
            problem = problem.split("\n   1 |")[0].strip()  # not the grammar it became
            raise InvalidRequest(f"{self.describe()} cannot be enforced: {problem}", param)

    def describe(self) -> str:
        names = {
            "json": "the JSON schema",
            "json_object": "the JSON object format",
            "regex": "the regex",
            "choice": "the choice",
            "grammar": "the grammar",
        }
        return names[self.kind]
