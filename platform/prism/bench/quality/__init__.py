"""The quality benchmark: perplexity and top-1 agreement of each quantization on a fixed text."""
