"""Prefix-cache-aware routing: the Redis prefix index, replica scoring and the Serve router.

Imports Redis and Serve's router API, never the engine: the serving layer wires them.
"""
