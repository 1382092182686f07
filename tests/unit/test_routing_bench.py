"""The routing benchmark without Ray: workloads, the load against a fake server, the math."""

from __future__ import annotations

import asyncio
import json
from collections import defaultdict
from pathlib import Path

import httpx
import pytest
from openai import AsyncOpenAI

from prism.bench.machine import Machine
from prism.bench.routing.bench import deployment_config, with_policy, with_redis
from prism.bench.routing.load import (
    LoadShape,
    RoutedRecord,
    RoutedRun,
    run_routed_load,
    warm_up,
)
from prism.bench.routing.plot import write_routing_plot
from prism.bench.routing.report import format_routing_report, routing_to_json
from prism.bench.routing.results import (
    PolicyResult,
    RoutingBenchResult,
    RoutingDeployment,
    replica_counts,
    summarize_policy,
)
from prism.bench.routing.workloads import (
    TOKEN_IDS,
    WARMUP_TOKEN_IDS,
    PlannedRequest,
    RoutingWorkload,
    ideal_cached_tokens,
    plan_requests,
    warmup_prompts,
)
from prism.bench.serve.load import RequestRecord
from prism.cli import build_parser
from prism.config import DEFAULT_PROFILE, load_config
from prism.errors import PrismError

BLOCK = 16


def _workload(name: str, **overrides: int) -> RoutingWorkload:
    settings = {
        "requests": 24,
        "groups": 4,
        "prefix_tokens": 40,
        "question_tokens": 8,
        "output_tokens": 4,
    }
    return RoutingWorkload(name, **(settings | overrides))


# --- workloads ---


def test_shared_prefix_requests_share_exactly_their_groups_prefix() -> None:
    requests = plan_requests(_workload("shared-prefix"), BLOCK)

    assert all(len(request.prompt) == 48 for request in requests)
    by_group: dict[int, list[PlannedRequest]] = defaultdict(list)
    for request in requests:
        by_group[request.group].append(request)
    prefixes = {group: members[0].prompt[:40] for group, members in by_group.items()}
    assert len({tuple(prefix) for prefix in prefixes.values()}) == 4
    for group, members in by_group.items():
        assert all(member.prompt[:40] == prefixes[group] for member in members)
        assert len({tuple(member.prompt[40:]) for member in members}) == len(members)
    assert all(request.after is None for request in requests)


def test_groups_interleave_in_shuffled_rounds() -> None:
    requests = plan_requests(_workload("shared-prefix", requests=22), BLOCK)
    groups = [request.group for request in requests]

    rounds = [groups[start : start + 4] for start in range(0, 22, 4)]
    assert all(sorted(one) == [0, 1, 2, 3] for one in rounds[:-1])
    assert len(set(rounds[-1])) == len(rounds[-1]) == 2
    assert len({tuple(one) for one in rounds}) > 1, "every round in the same order"


def test_prompts_are_deterministic_per_seed_and_use_ordinary_token_ids() -> None:
    first = plan_requests(_workload("multi-turn"), BLOCK)
    again = plan_requests(_workload("multi-turn"), BLOCK)
    other = plan_requests(_workload("multi-turn", seed=1), BLOCK)

    assert first == again
    assert [r.prompt for r in first] != [r.prompt for r in other]
    assert all(token in TOKEN_IDS for request in first for token in request.prompt)


def test_multi_turn_prompts_extend_the_previous_turn_by_an_answer_and_a_question() -> None:
    requests = plan_requests(_workload("multi-turn"), BLOCK)

    last: dict[int, PlannedRequest] = {}
    for request in requests:
        previous = last.get(request.group)
        if previous is None:
            assert len(request.prompt) == 40 + 8
            assert request.after is None
        else:
            assert request.prompt[: len(previous.prompt)] == previous.prompt
            assert len(request.prompt) == len(previous.prompt) + 4 + 8
            assert request.after == previous.index
        last[request.group] = request
    assert sorted(len(request.prompt) for request in last.values()) == [48 + 5 * 12] * 4


def test_unique_prompts_share_nothing() -> None:
    requests = plan_requests(_workload("unique"), BLOCK)

    assert len({tuple(request.prompt[:BLOCK]) for request in requests}) == len(requests)
    assert all(request.ideal_cached_tokens == 0 for request in requests)


def test_ideal_counts_whole_shared_blocks_after_each_groups_first_request() -> None:
    requests = plan_requests(_workload("shared-prefix"), BLOCK)

    seen: set[int] = set()
    for request in requests:
        expected = 32 if request.group in seen else 0  # 40 shared tokens: two whole blocks
        assert request.ideal_cached_tokens == expected
        seen.add(request.group)


def test_ideal_of_a_turn_is_the_previous_prompts_whole_blocks() -> None:
    requests = plan_requests(_workload("multi-turn"), BLOCK)

    by_index = {request.index: request for request in requests}
    for request in requests:
        if request.after is None:
            assert request.ideal_cached_tokens == 0
        else:
            previous = len(by_index[request.after].prompt)
            assert request.ideal_cached_tokens == previous // BLOCK * BLOCK


def test_ideal_never_counts_the_last_prompt_token() -> None:
    prompt = list(range(1000, 1032))  # exactly two blocks

    assert ideal_cached_tokens([prompt, prompt], BLOCK) == [0, 16]
    assert ideal_cached_tokens([prompt, [*prompt, 7]], BLOCK) == [0, 32]
    assert ideal_cached_tokens([prompt, [*prompt[:16], 7, *prompt[17:]]], BLOCK) == [0, 16]


def test_warmup_prompts_come_from_ids_no_workload_uses() -> None:
    prompts = warmup_prompts(6)

    assert len({tuple(prompt) for prompt in prompts}) == 6
    assert all(token in WARMUP_TOKEN_IDS and token not in TOKEN_IDS for p in prompts for token in p)


def test_workload_refuses_unknown_names_and_empty_counts() -> None:
    with pytest.raises(ValueError, match="unknown workload"):
        _workload("chatty")
    with pytest.raises(ValueError, match="groups"):
        _workload("unique", groups=0)


# --- the load, against a fake server ---


def _sse(*payloads: dict) -> bytes:
    events = [f"data: {json.dumps(payload)}\n\n" for payload in payloads]
    return ("".join(events) + "data: [DONE]\n\n").encode()


def _completion_stream(prompt_tokens: int, cached: int, texts: list[str]) -> bytes:
    envelope = {"id": "cmpl-1", "object": "text_completion", "created": 0, "model": "m"}
    chunks = [
        {**envelope, "choices": [{"index": 0, "text": text, "finish_reason": None}]}
        for text in texts
    ]
    usage = {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": len(texts),
        "total_tokens": prompt_tokens + len(texts),
        "prompt_tokens_details": {"cached_tokens": cached},
    }
    return _sse(*chunks, {**envelope, "choices": [], "usage": usage})


class FakeServer:
    """Answers streamed completions, naming replicas in turn; logs each request's life."""

    def __init__(self, replicas: list[str], predict: bool = True, delay: float = 0.0) -> None:
        self.replicas = replicas
        self.predict = predict
        self.delay = delay
        self.events: list[tuple[str, str, int]] = []
        self.bodies: list[dict] = []

    async def handle(self, request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        session = request.headers["x-session-id"]
        length = len(body["prompt"])
        replica = self.replicas[len(self.bodies) % len(self.replicas)]
        self.bodies.append(body)
        self.events.append(("start", session, length))
        await asyncio.sleep(self.delay)
        self.events.append(("end", session, length))
        headers = {"x-prism-replica": replica}
        if self.predict:
            headers["x-prism-predicted-cached-tokens"] = str(length // 2)
        content = _completion_stream(length, length // 4, ["a", "", "b"])
        return httpx.Response(200, headers=headers, content=content)

    def client(self) -> AsyncOpenAI:
        transport = httpx.MockTransport(self.handle)
        return AsyncOpenAI(
            base_url="http://prism.test/v1",
            api_key="unused",
            max_retries=0,
            http_client=httpx.AsyncClient(transport=transport),
        )


def _run(server: FakeServer, requests: list[PlannedRequest], shape: LoadShape) -> RoutedRun:
    async def go() -> RoutedRun:
        async with server.client() as client:
            return await run_routed_load(client, "m", requests, 4, shape, lambda record: None)

    return asyncio.run(go())


def test_load_records_replica_prediction_usage_and_first_text_chunk() -> None:
    server = FakeServer(["r0", "r1"])
    requests = plan_requests(_workload("shared-prefix", requests=6), BLOCK)

    run = _run(server, requests, LoadShape(concurrency=3, rate=None, timeout_seconds=10.0))

    assert [record.request.index for record in run.records] == list(range(6))
    for record in run.records:
        length = len(record.request.prompt)
        assert record.result.error is None
        assert record.result.replica in ("r0", "r1")
        assert record.predicted_cached_tokens == length // 2
        assert (record.result.prompt_tokens, record.result.cached_tokens) == (length, length // 4)
        assert record.result.completion_tokens == 3
        assert len(record.result.content_times) == 2  # the empty chunk carries no text
    assert all(body["max_tokens"] == 4 and body["ignore_eos"] for body in server.bodies)
    assert all(body["temperature"] == 0.0 and body["stream"] for body in server.bodies)


def test_a_missing_prediction_header_is_no_prediction() -> None:
    server = FakeServer(["r0"], predict=False)
    requests = plan_requests(_workload("unique", requests=2), BLOCK)

    run = _run(server, requests, LoadShape(concurrency=2, rate=None, timeout_seconds=10.0))

    assert [record.predicted_cached_tokens for record in run.records] == [None, None]


@pytest.mark.parametrize(
    "shape",
    [
        LoadShape(concurrency=8, rate=None, timeout_seconds=10.0),
        LoadShape(concurrency=1, rate=500.0, timeout_seconds=10.0),
    ],
    ids=["closed-loop", "poisson"],
)
def test_a_conversation_sends_its_next_turn_only_after_the_last_one_ended(
    shape: LoadShape,
) -> None:
    server = FakeServer(["r0"], delay=0.02)
    requests = plan_requests(_workload("multi-turn", requests=8, groups=2), BLOCK)

    run = _run(server, requests, shape)

    assert all(record.result.error is None for record in run.records)
    per_session: dict[str, list[tuple[str, int]]] = defaultdict(list)
    for event, session, length in server.events:
        per_session[session].append((event, length))
    assert set(per_session) == {"group-0", "group-1"}
    for events in per_session.values():
        assert [event for event, _ in events] == ["start", "end"] * 4
        lengths = [length for _, length in events[::2]]
        assert lengths == sorted(lengths) and len(set(lengths)) == 4


def test_warm_up_stops_once_every_replica_answered() -> None:
    server = FakeServer(["r0", "r1", "r2"])

    async def go() -> set[str]:
        async with server.client() as client:
            return await warm_up(client, "m", warmup_prompts(12), 3, 10.0)

    assert asyncio.run(go()) == {"r0", "r1", "r2"}
    assert len(server.bodies) == 3
    assert len({body["prompt"][0] for body in server.bodies}) == 3


def test_warm_up_gives_up_after_its_prompts_when_a_replica_never_answers() -> None:
    server = FakeServer(["r0"])

    async def go() -> set[str]:
        async with server.client() as client:
            return await warm_up(client, "m", warmup_prompts(6), 3, 10.0)

    assert asyncio.run(go()) == {"r0"}
    assert len(server.bodies) == 6


def test_a_failed_warm_up_request_stops_the_benchmark() -> None:
    async def refuse(request: httpx.Request) -> httpx.Response:
        return httpx.Response(503, json={"error": {"message": "no replicas", "type": "x"}})

    async def go() -> set[str]:
        client = AsyncOpenAI(
            base_url="http://prism.test/v1",
            api_key="unused",
            max_retries=0,
            http_client=httpx.AsyncClient(transport=httpx.MockTransport(refuse)),
        )
        async with client:
            return await warm_up(client, "m", warmup_prompts(3), 3, 10.0)

    with pytest.raises(PrismError, match="no replicas"):
        asyncio.run(go())


# --- summaries, ratios and the report ---


def _record(
    group: int,
    prompt_tokens: int,
    cached: int,
    ideal: int,
    ttft: float,
    replica: str = "r0",
    predicted: int | None = None,
    error: str | None = None,
) -> RoutedRecord:
    request = PlannedRequest(0, group, [1] * prompt_tokens, ideal)
    result = RequestRecord(
        content_times=[] if error else [ttft, ttft + 0.1],
        finished=ttft + 0.1,
        prompt_tokens=0 if error else prompt_tokens,
        completion_tokens=0 if error else 2,
        cached_tokens=0 if error else cached,
        replica=None if error else replica,
        error=error,
    )
    return RoutedRecord(request, 0.0, result, predicted)


def _prefix_run() -> RoutedRun:
    records = [
        _record(0, 100, 0, 0, 0.4, "r0", predicted=0),
        _record(0, 100, 96, 96, 0.1, "r0", predicted=96),
        _record(1, 100, 0, 0, 0.5, "r1", predicted=None),
        _record(1, 100, 48, 96, 0.2, "r1", predicted=96),
        _record(1, 100, 0, 96, 0.0, error="Error code: 429 - overloaded"),
    ]
    return RoutedRun(records, seconds=2.0)


def test_summary_ratios_and_precision_come_from_successful_requests() -> None:
    summary = summarize_policy("prefix", _prefix_run(), known_replicas=["r2", "r0", "r1"])

    assert (summary.completed, summary.errors) == (4, 1)
    assert summary.hit_ratio == pytest.approx(144 / 400)
    assert summary.ideal_hit_ratio == pytest.approx(192 / 400)
    assert summary.hit_of_ideal == pytest.approx(0.75)
    assert summary.predictions == 3
    assert summary.routing_precision == pytest.approx((0 + 96 + 48) / 192)
    assert summary.output_tokens_per_second == pytest.approx(8 / 2.0)
    assert summary.ttft_mean_seconds == pytest.approx(0.3)
    assert summary.ttft_seconds.p50 == pytest.approx(0.3)
    assert summary.ttft_seconds.p99 == pytest.approx(0.497)
    assert summary.replicas == {"r0": 2, "r1": 2, "r2": 0}
    assert summary.error_messages == {"Error code: 429 - overloaded": 1}


def test_precision_is_none_without_predictions() -> None:
    run = RoutedRun([_record(0, 64, 32, 48, 0.1)], seconds=1.0)

    assert summarize_policy("pow2", run).routing_precision is None


def test_replica_counts_list_the_busiest_first() -> None:
    records = [_record(0, 8, 0, 0, 0.1, replica) for replica in ["b", "a", "b", "c", "b", "a"]]

    assert list(replica_counts(records, known=["d"]).items()) == [
        ("b", 3),
        ("a", 2),
        ("c", 1),
        ("d", 0),
    ]


def _machine() -> Machine:
    return Machine("cpu", 2, 2, 1, "cpu", "cpu", "2", "5", "3.11")


DECISION = {
    "prompt_tokens": 8192,
    "blocks": 512,
    "replicas": 3,
    "hashing_ms": 0.4,
    "p50_ms": 0.25,
    "p90_ms": 0.5,
    "p99_ms": 1.5,
    "max_ms": 3.0,
}


def _result(
    *policies: tuple[str, RoutedRun], decision: dict[str, float] | None = None
) -> RoutingBenchResult:
    return RoutingBenchResult(
        date="2026-11-24T10:00:00+00:00",
        machine=_machine(),
        model_id="smollm2-135m-instruct",
        deployment=RoutingDeployment(3, 128 << 20, 2 / 3, 1),
        workload=_workload("shared-prefix", requests=5),
        load=LoadShape(concurrency=6, rate=None, timeout_seconds=300.0),
        policies=[PolicyResult(summarize_policy(name, run), run.records) for name, run in policies],
        decision_ms=decision,
    )


def _pow2_run() -> RoutedRun:
    records = [_record(group, 100, 0, 96 * (group > 0), 0.6, f"r{group}") for group in range(4)]
    return RoutedRun(records, seconds=4.0)


def test_ratios_against_pow2_favour_the_faster_policy() -> None:
    result = _result(("prefix", _prefix_run()), ("pow2", _pow2_run()))

    [ratios] = result.baseline_ratios()

    assert ratios.policy == "prefix"
    assert ratios.ttft_mean == pytest.approx(0.6 / 0.3)
    assert ratios.ttft_p90 == pytest.approx(0.6 / 0.47)
    assert ratios.output_tokens_per_second == pytest.approx((8 / 2.0) / (8 / 4.0))
    assert _result(("prefix", _prefix_run())).baseline_ratios() == []


def test_report_has_a_row_per_policy_the_pow2_ratios_and_decision_times() -> None:
    result = _result(("prefix", _prefix_run()), ("pow2", _pow2_run()), decision=DECISION)

    report = format_routing_report(result)
    lines = report.splitlines()

    prefix_row, prefix_ratios = [line for line in lines if line.startswith("prefix ")]
    [pow2_row] = [line for line in lines if line.startswith("pow2 ")]
    assert prefix_row.split() == [
        *("prefix", "4", "1", "36.0%", "48.0%", "75.0%"),  # requests and cache hits
        *("0.300", "0.300", "0.470", "0.497"),  # TTFT
        *("4.0", "75.0%", "2/2"),  # throughput, precision, requests per replica
    ]
    assert pow2_row.split()[-2:] == ["-", "1/1/1/1"]
    assert prefix_ratios.split() == ["prefix", "2.00x", "1.28x", "2.00x"]
    assert "p50 0.250, p90 0.500, p99 1.500, max 3.000" in report
    assert "8192-token prompt (512 blocks), 3 replicas" in report
    assert "error under prefix (1x): Error code: 429 - overloaded" in report


def test_report_without_pow2_or_decision_times_leaves_those_sections_out() -> None:
    report = format_routing_report(_result(("prefix", _prefix_run())))

    assert "vs pow2" not in report
    assert "router decision" not in report


def test_json_keeps_every_request_and_the_decision_times() -> None:
    result = _result(("prefix", _prefix_run()), ("pow2", _pow2_run()), decision=DECISION)

    record = json.loads(json.dumps(routing_to_json(result)))

    assert [policy["policy"] for policy in record["policies"]] == ["prefix", "pow2"]
    prefix = record["policies"][0]
    assert len(prefix["requests"]) == 5
    assert prefix["requests"][1]["predicted_cached_tokens"] == 96
    assert prefix["summary"]["routing_precision"] == pytest.approx(0.75)
    assert record["vs_pow2"][0]["policy"] == "prefix"
    assert record["router_decision"] == DECISION
    assert "router_decision" not in routing_to_json(_result(("prefix", _prefix_run())))


def test_plot_is_written_as_a_png(tmp_path: Path) -> None:
    path = tmp_path / "plots" / "routing.png"

    write_routing_plot(_result(("prefix", _prefix_run()), ("pow2", _pow2_run())), path)

    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


# --- deployment config and command line ---


def test_deployment_config_pins_the_first_model_and_policies_swap_cleanly() -> None:
    base = load_config(DEFAULT_PROFILE)
    deployment = RoutingDeployment(
        replicas=3, kv_cache_bytes=64 << 20, num_cpus=0.5, ingress_replicas=2
    )

    config = with_redis(with_policy(deployment_config(base, deployment), "pow2"), "redis://x/0")

    [model] = config.models
    assert (model.replicas, model.autoscaling) == (3, None)
    assert model.resources.num_cpus == 0.5
    assert model.engine.kv_cache_bytes == 64 << 20
    assert model.engine.block_size == base.models[0].engine.block_size
    assert config.http.ingress_replicas == 2
    assert (config.router.policy, config.redis.url) == ("pow2", "redis://x/0")
    assert base.router.policy == "prefix" and base.redis.url is None
    with pytest.raises(ValueError, match="policy"):
        with_policy(config, "random")


def test_command_line_parses_policies_sizes_and_refuses_repeats() -> None:
    parser = build_parser()

    args = parser.parse_args(["bench", "routing", "--policies", "pow2, session"])
    assert args.policies == ["pow2", "session"]
    assert args.kv_cache == 128 << 20
    assert (args.replicas, args.num_cpus, args.rate) == (3, None, None)
    assert parser.parse_args(["bench", "routing", "--kv-cache", "1GiB"]).kv_cache == 1 << 30
    for bad in (["--policies", "prefix,prefix"], ["--policies", "lru"], ["--rate", "0"]):
        with pytest.raises(SystemExit):
            parser.parse_args(["bench", "routing", *bad])
