"""What the ingress tells the router about a request, and what the router decided."""

from __future__ import annotations

from dataclasses import dataclass

from prism.hashing import BlockHash, block_hashes, cache_namespace


@dataclass(slots=True)
class RoutingHint:
    """Travels with a request to the router (the router runs in the ingress's process)."""

    block_hashes: list[BlockHash]
    num_prompt_tokens: int
    block_size: int
    session_id: str | None = None
    policy: str | None = None
    """Set by the router: the policy that placed the request."""
    replica_runs: dict[str, int] | None = None
    """Set by the router: leading blocks each candidate replica held, from the index
    (None: the index was not asked or could not answer)."""
    predicted_cached_tokens: int | None = None
    """Set by the router once the request is sent: the tokens it expects to be cached."""

    @classmethod
    def for_prompt(
        cls,
        prompt_token_ids: list[int],
        model_id: str,
        block_size: int,
        cache_salt: str | None = None,
        session_id: str | None = None,
    ) -> RoutingHint:
        """Hash the prompt's full blocks exactly as the engine will."""
        hashes = block_hashes(prompt_token_ids, block_size, cache_namespace(model_id, cache_salt))
        return cls(hashes, len(prompt_token_ids), block_size, session_id)

    def cached_tokens(self, leading_blocks: int) -> int:
        """Prompt tokens a replica holding ``leading_blocks`` blocks would not recompute."""
        return max(min(leading_blocks * self.block_size, self.num_prompt_tokens - 1), 0)
