"""Prefix-cache-aware routing: the Redis prefix index, replica scoring and the Serve router.

It shares only the contract modules with the engine (``prism.hashing`` for block hashes,
``prism.kv_events`` for what the cache gained or lost) and never imports the engine itself;
``make lint`` checks that (``.importlinter``). The serving layer wires the two together.
"""
