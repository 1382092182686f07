"""Output constraints as the ingress checks them: what compiles, and what is refused by name."""

from __future__ import annotations

import pytest

from prism.errors import InvalidRequest
from prism.serving.protocol import CompletionRequest
from prism.structured_output import StructuredOutput


@pytest.mark.parametrize(
    "constraint",
    [
        StructuredOutput.json_schema({"type": "object", "properties": {"a": {"type": "integer"}}}),
        StructuredOutput.json_schema('{"type": "array", "items": {"type": "string"}}'),
        StructuredOutput.json_schema(True),
        StructuredOutput.json_object(),
        StructuredOutput.regex(r"\d{3}-[a-z]+"),
        StructuredOutput.choice(['say "hi"', "naïve", "back\\slash"]),
        StructuredOutput.grammar('start: "yes" | "no"'),
        StructuredOutput.grammar('root ::= "a" [0-9]+'),
    ],
    ids=["schema", "schema-text", "true", "object", "regex", "choice", "lark", "gbnf"],
)
def test_valid_constraints_compile(constraint: StructuredOutput) -> None:
    constraint.check()


@pytest.mark.parametrize(
    ("make", "problem"),
    [
        (lambda: StructuredOutput.json_schema(False), "allows no output"),
        (lambda: StructuredOutput.json_schema("{not json"), "not valid JSON"),
        (lambda: StructuredOutput.json_schema("[1, 2]"), "must be an object"),
        (lambda: StructuredOutput.json_schema({"type": "strnig"}).check(), "strnig"),
        (lambda: StructuredOutput.json_schema({"$ref": "#/nope"}).check(), "/nope"),
        (lambda: StructuredOutput.json_schema({"uniqueItems": True}).check(), "uniqueItems"),
        (lambda: StructuredOutput.regex("(a").check(), "unclosed group"),
        (lambda: StructuredOutput.choice([]), "one or more"),
        (lambda: StructuredOutput.grammar("%%%").check(), "not valid"),
        (lambda: StructuredOutput.grammar("start: rule").check(), "rule"),
    ],
)
def test_invalid_constraints_are_refused_naming_the_problem(make, problem: str) -> None:
    with pytest.raises(InvalidRequest, match=problem):
        make()


def test_equal_constraints_are_one_cache_key() -> None:
    by_dict = StructuredOutput.json_schema({"a": 1, "b": [1, 2]})
    by_text = StructuredOutput.json_schema('{"a": 1,  "b": [1, 2]}')
    assert by_dict == by_text and hash(by_dict) == hash(by_text)


def test_every_spelling_of_a_constraint_reaches_the_sampling_params() -> None:
    schema = {"type": "object"}
    spellings = [
        ({"guided_json": schema}, StructuredOutput.json_schema(schema)),
        (
            {"structured_outputs": {"json": '{"type": "object"}'}},
            StructuredOutput.json_schema(schema),
        ),
        ({"structured_outputs": {"json_object": True}}, StructuredOutput.json_object()),
        ({"guided_regex": "a+"}, StructuredOutput.regex("a+")),
        ({"structured_outputs": {"choice": ["x", "y"]}}, StructuredOutput.choice(["x", "y"])),
        ({"guided_grammar": 'start: "z"'}, StructuredOutput.grammar('start: "z"')),
    ]
    for fields, expected in spellings:
        body = CompletionRequest.model_validate({"model": "m", "prompt": "p", **fields})
        assert body.sampling_params(8, None).structured == expected
