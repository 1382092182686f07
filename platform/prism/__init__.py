"""Prism: an LLM serving platform with its own continuous-batching engine."""
