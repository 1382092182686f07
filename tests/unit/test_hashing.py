"""The block-hash chain is stable, namespaced and hashes only full blocks."""

from __future__ import annotations

import subprocess
import sys

from prism.hashing import (
    block_hashes,
    cache_namespace,
    extend_block_hashes,
    hash_block,
    root_hash,
)

TOKENS = list(range(100, 137))  # 37 tokens: 9 full blocks of 4, one partial


def test_only_full_blocks_are_hashed_and_each_chains_on_its_parent() -> None:
    hashes = block_hashes(TOKENS, 4, ("m",))
    assert len(hashes) == 9
    assert hashes[0] == hash_block(root_hash(("m",)), TOKENS[:4])
    assert hashes[1] == hash_block(hashes[0], TOKENS[4:8])
    assert len(set(hashes)) == 9


def test_same_block_after_different_prefixes_hashes_differently() -> None:
    a = block_hashes([1, 2, 3, 4, 9, 9, 9, 9], 4)
    b = block_hashes([5, 6, 7, 8, 9, 9, 9, 9], 4)
    assert a[1] != b[1]


def test_extending_incrementally_equals_hashing_at_once() -> None:
    root = root_hash(cache_namespace("m"))
    hashes: list[bytes] = []
    for end in range(1, len(TOKENS) + 1):
        extend_block_hashes(hashes, TOKENS[:end], 4, root)
    assert hashes == block_hashes(TOKENS, 4, cache_namespace("m"))


def test_namespace_keys_separate_models_and_salts() -> None:
    plain = block_hashes(TOKENS, 4, cache_namespace("model-a"))
    assert plain != block_hashes(TOKENS, 4, cache_namespace("model-b"))
    assert plain != block_hashes(TOKENS, 4, cache_namespace("model-a", "salt"))
    # keys are length-prefixed: ("ab", "c") and ("a", "bc") are different namespaces
    assert root_hash(("ab", "c")) != root_hash(("a", "bc"))


def test_hashes_are_identical_in_another_process() -> None:
    code = (
        "from prism.hashing import block_hashes;"
        f"print(b''.join(block_hashes({TOKENS!r}, 4, ('m',))).hex())"
    )
    other = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        env={"PYTHONHASHSEED": "12345"},
    )
    assert other.stdout.strip() == b"".join(block_hashes(TOKENS, 4, ("m",))).hex()
