"""The one block-hash chain shared by the engine and the router.

``hash(block) = H(parent_hash, token ids of the block)``, where the first block's parent is a
root hash derived from the *extra keys* (model id and revision, LoRA adapter, a client's
``cache_salt``): whatever changes the KV content of a block namespaces its hash. H is
BLAKE2b, so every process computes identical values (no Python ``hash()``, no random seed).
Only full blocks are hashed.
"""

from __future__ import annotations

import hashlib
import sys
from array import array
from collections.abc import Iterable, Sequence

BlockHash = bytes
"""A 16-byte digest identifying a full block of tokens and everything before it."""

DIGEST_SIZE = 16
_ROOT_DOMAIN = b"prism/block-hash/v1"


def root_hash(extra_keys: Iterable[str] = ()) -> BlockHash:
    """The parent hash of a sequence's first block, namespaced by ``extra_keys``."""
    digest = hashlib.blake2b(_ROOT_DOMAIN, digest_size=DIGEST_SIZE)
    for key in extra_keys:
        encoded = key.encode()
        digest.update(len(encoded).to_bytes(4, "little"))
        digest.update(encoded)
    return digest.digest()


def _token_bytes(token_ids: Sequence[int]) -> bytes:
    packed = array("I", token_ids)
    if sys.byteorder != "little":
        packed.byteswap()
    return packed.tobytes()


def hash_block(parent: BlockHash, token_ids: Sequence[int]) -> BlockHash:
    """Hash of one full block given its parent's hash."""
    digest = hashlib.blake2b(parent, digest_size=DIGEST_SIZE)
    digest.update(_token_bytes(token_ids))
    return digest.digest()


def extend_block_hashes(
    hashes: list[BlockHash],
    token_ids: Sequence[int],
    block_size: int,
    root: BlockHash,
) -> None:
    """Append to ``hashes`` the hashes of every full block of ``token_ids`` not yet hashed.

    ``hashes`` must already hold the hashes of the leading full blocks of ``token_ids``.
    """
    parent = hashes[-1] if hashes else root
    for start in range(len(hashes) * block_size, len(token_ids) - block_size + 1, block_size):
        parent = hash_block(parent, token_ids[start : start + block_size])
        hashes.append(parent)


def block_hashes(
    token_ids: Sequence[int], block_size: int, extra_keys: Iterable[str] = ()
) -> list[BlockHash]:
    """Hashes of every full block of ``token_ids``, in order."""
    hashes: list[BlockHash] = []
    extend_block_hashes(hashes, token_ids, block_size, root_hash(extra_keys))
    return hashes


def cache_namespace(model_id: str, cache_salt: str | None = None) -> tuple[str, ...]:
    """The extra keys that namespace a request's block hashes (model, optional salt)."""
    return (model_id,) if cache_salt is None else (model_id, cache_salt)
