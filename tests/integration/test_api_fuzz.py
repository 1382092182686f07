"""Schemathesis fuzzes every operation of the live API's OpenAPI schema, with the key and
without it: no request gets a 5xx, every 4xx is an OpenAI error, and the server keeps serving.

Generated bodies name the served model and ask for at most a few short choices, so the tiny
CPU engine answers each within a fraction of a second; values the API would refuse are left
as generated, so the refusals are fuzzed too.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis import BaseSchema, Case, CheckContext, GenerationMode, Response
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    response_schema_conformance,
)

from prism.serving.protocol import MAX_N
from support.live_platform import API_KEY, MODEL_ID, Platform

OUTPUT_TOKENS = 2
"""The most tokens a fuzzed request may ask for, per choice."""
CHOICES = 2
"""The most choices (``n``) a fuzzed request may ask for."""
OPEN_PATHS = frozenset({"/health"})
"""Paths answered without the API key."""
AUTHORIZATION = {"Authorization": f"Bearer {API_KEY}"}
REQUEST_TIMEOUT_S = 30.0
WITH_KEY_EXAMPLES = 12
"""Random cases per operation with the key, after the coverage phase's boundary cases."""
WITHOUT_KEY_EXAMPLES = 6
"""Random cases per operation without the key (every one is refused before validation)."""


def schemathesis_config(*, coverage: bool) -> schemathesis.Config:
    """Positive and negative cases from a fixed seed; the coverage phase (every property's
    boundary values, refused methods) only where asked."""
    return schemathesis.Config.from_dict(
        {
            "seed": 20240601,
            "generation": {"mode": "all", "deterministic": True},
            "phases": {"coverage": {"enabled": coverage}, "stateful": {"enabled": False}},
            "request-timeout": REQUEST_TIMEOUT_S,
        }
    )


def fuzz_settings(max_examples: int) -> settings:
    """Hypothesis settings of a bounded, reproducible run."""
    return settings(
        max_examples=max_examples,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=[
            HealthCheck.too_slow,
            HealthCheck.filter_too_much,
            HealthCheck.data_too_large,
            HealthCheck.large_base_example,
        ],
    )


def load_schema(platform: Platform, config: schemathesis.Config) -> BaseSchema:
    """The schema the running ingress serves (its route needs the key, like every other)."""
    return schemathesis.openapi.from_url(
        f"{platform.base_url}/openapi.json",
        config=config,
        headers=AUTHORIZATION,
        timeout=REQUEST_TIMEOUT_S,
    )


@pytest.fixture(scope="module")
def keyed_schema(platform: Platform) -> BaseSchema:
    return load_schema(platform, schemathesis_config(coverage=True))


@pytest.fixture(scope="module")
def anonymous_schema(platform: Platform) -> BaseSchema:
    return load_schema(platform, schemathesis_config(coverage=False))


@pytest.fixture(scope="module")
def session() -> Iterator[requests.Session]:
    with requests.Session() as session:
        yield session


@pytest.fixture(scope="module")
def sent() -> set[str]:
    """The valid requests sent so far, as :func:`already_sent` keys them."""
    return set()


@pytest.fixture(autouse=True)
def _node_id_for_schemathesis(request: pytest.FixtureRequest) -> None:
    """Schemathesis's lazy schemas read and set ``_nodeid``, which pytest 9.2's nodes lack."""
    if not hasattr(request.node, "_nodeid"):
        request.node._nodeid = request.node.nodeid


keyed = schemathesis.pytest.from_fixture("keyed_schema")
anonymous = schemathesis.pytest.from_fixture("anonymous_schema")


def _capped(value: Any, limit: int, most: int | None = None) -> Any:
    """``value`` lowered to ``limit`` where the API takes it as a larger whole number; a value
    it refuses (a string, a fraction, one over ``most``) stays as generated."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return value
    if isinstance(value, float) and not value.is_integer():
        return value
    if value <= limit or (most is not None and value > most):
        return value
    return type(value)(limit)


def bound_generation(case: Case) -> None:
    """Point a generated body at the served model and keep its generation short.

    Only values the API would accept change, and they stay acceptable: a case generated to
    be refused is still refused for the same reason.
    """
    body = case.body
    if not isinstance(body, dict):
        return
    if isinstance(body.get("model"), str) and body["model"]:
        body["model"] = MODEL_ID
    if body.get("max_tokens") is None:  # a chat reply could otherwise fill the context
        body["max_tokens"] = OUTPUT_TOKENS
    for name, limit, most in (
        ("max_tokens", OUTPUT_TOKENS, None),
        ("max_completion_tokens", OUTPUT_TOKENS, None),
        ("min_tokens", OUTPUT_TOKENS, None),
        ("n", CHOICES, MAX_N),
    ):
        if name in body:
            body[name] = _capped(body[name], limit, most)


def already_sent(case: Case, sent: set[str]) -> bool:
    """Whether a valid case repeats one sent before, a null field being an omitted one (the
    coverage phase makes many such cases, and each would run the engine again)."""
    if case.meta is None or case.meta.generation.mode is not GenerationMode.POSITIVE:
        return False
    if not isinstance(case.body, dict):
        return False
    fields = {name: value for name, value in case.body.items() if value is not None}
    key = f"{case.method} {case.path} {json.dumps(fields, sort_keys=True)}"
    if key in sent:
        return True
    sent.add(key)
    return False


def _json(response: Response) -> object:
    try:
        return json.loads(response.content)
    except ValueError as error:
        raise AssertionError(f"the body is not JSON: {response.content[:200]!r}") from error


def openai_error_form(ctx: CheckContext, response: Response, case: Case) -> bool | None:
    """Every 4xx is JSON ``{"error": {"message", "type", "param", "code"}}``."""
    if not 400 <= response.status_code < 500:
        return None
    content_type = response.headers.get("content-type", [""])[0]
    assert content_type.startswith("application/json"), f"a 4xx as {content_type!r}"
    body = _json(response)
    assert isinstance(body, dict) and set(body) == {"error"}, f"not an OpenAI error: {body}"
    error = body["error"]
    assert isinstance(error, dict), f"not an OpenAI error: {body}"
    assert set(error) == {"message", "type", "param", "code"}, f"not an OpenAI error: {body}"
    assert isinstance(error["message"], str) and error["message"], f"no message: {body}"
    assert isinstance(error["type"], str) and error["type"], f"no type: {body}"
    assert error["param"] is None or isinstance(error["param"], str), f"bad param: {body}"
    assert error["code"] is None or isinstance(error["code"], str), f"bad code: {body}"
    return True


def complete_stream(ctx: CheckContext, response: Response, case: Case) -> bool | None:
    """A streamed 200 carries no error event and ends with ``data: [DONE]``."""
    content_type = response.headers.get("content-type", [""])[0]
    if response.status_code != 200 or not content_type.startswith("text/event-stream"):
        return None
    text = response.content.decode()
    assert "event: error" not in text, f"the stream failed: {text[-500:]}"
    assert text.rstrip().endswith("data: [DONE]"), f"the stream did not end: {text[-500:]}"
    return True


def refused_without_key(ctx: CheckContext, response: Response, case: Case) -> bool | None:
    """Without the key every path but the open ones is a 401 ``invalid_api_key``."""
    if case.path in OPEN_PATHS:
        return None
    assert response.status_code == 401, f"{response.status_code} without the API key"
    body = _json(response)
    assert isinstance(body, dict) and body.get("error", {}).get("code") == "invalid_api_key"
    return True


def _is_stream(case: Case) -> bool:
    return isinstance(case.body, dict) and case.body.get("stream") is True


@keyed.parametrize()
@fuzz_settings(max_examples=WITH_KEY_EXAMPLES)
def test_fuzz_with_the_key(case: Case, session: requests.Session, sent: set[str]) -> None:
    """No 5xx, OpenAI errors, whole streams, refused invalid data, documented responses."""
    bound_generation(case)
    if already_sent(case, sent):
        return
    checks = [
        not_a_server_error,
        openai_error_form,
        complete_stream,
        negative_data_rejection,
        response_schema_conformance,
    ]
    if not _is_stream(case):  # the schema documents JSON responses only
        checks.append(content_type_conformance)
    case.call_and_validate(session=session, headers=AUTHORIZATION, checks=checks)


@anonymous.parametrize()
@fuzz_settings(max_examples=WITHOUT_KEY_EXAMPLES)
def test_fuzz_without_the_key(case: Case, session: requests.Session) -> None:
    """Every operation but the open ones is a 401 in OpenAI form, valid body or not."""
    bound_generation(case)
    checks = [not_a_server_error, openai_error_form, refused_without_key]
    case.call_and_validate(session=session, checks=checks)


def test_serves_normally_after_fuzzing(platform: Platform) -> None:
    """A plain chat still works and nothing the fuzzing started is left running."""
    completion = platform.client().chat.completions.create(
        model=MODEL_ID, messages=[{"role": "user", "content": "Hi"}], max_tokens=2
    )
    assert completion.choices[0].finish_reason in ("stop", "length")
    assert completion.usage is not None and completion.usage.completion_tokens <= 2
    assert platform.wait_until_idle()["num_running"] == 0
