"""Engine requests streamed as the ingress sees them, without Ray: a replica in-process.

:class:`InProcessReplica` answers :class:`GenerateRequest` s from a real
:class:`AsyncEngine`, the way ``LLMServer.generate`` does behind Serve's handle, so the
ingress's fan-out can be driven without a cluster.
"""

from __future__ import annotations

from prism.engine import AsyncEngine, EngineStats, SamplingParams
from prism.serving.messages import GenerateChunk, GenerateRequest


class EngineStream:
    """One request's outputs from an :class:`AsyncEngine`, tagged with its replica.

    ``cancel`` aborts the request on the engine (its blocks are freed), as cancelling a
    Serve streaming call aborts it on the replica.
    """

    def __init__(self, engine: AsyncEngine, request: GenerateRequest, replica: str) -> None:
        self.engine = engine
        self.request_id = request.request_id
        self.replica = replica
        self._outputs = engine.generate(
            request.prompt_token_ids, request.params, request.request_id, request.cache_salt
        )

    def __aiter__(self) -> EngineStream:
        return self

    async def __anext__(self) -> GenerateChunk:
        output = await anext(self._outputs)
        return GenerateChunk(output, self.replica)

    def cancel(self) -> None:
        self.engine.abort(self.request_id)


class InProcessReplica:
    """A model replica in this process: ``send`` starts a request on its engine."""

    def __init__(self, engine: AsyncEngine, replica_id: str) -> None:
        self.engine = engine
        self.replica_id = replica_id
        self.requests: list[GenerateRequest] = []

    def send(self, request: GenerateRequest) -> EngineStream:
        self.requests.append(request)
        return EngineStream(self.engine, request, self.replica_id)

    async def settle(self) -> EngineStats:
        """The engine's stats once everything sent to it so far has been applied.

        A one-token request goes through the engine's queue after the earlier adds and
        aborts; its output arrives with the stats of the step that finished it.
        """
        async for _ in self.engine.generate([0], SamplingParams(max_tokens=1)):
            pass
        return self.engine.stats()
