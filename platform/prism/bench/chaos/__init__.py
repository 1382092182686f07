"""The chaos benchmark: streaming load while replicas die, Redis restarts and steps fail."""
