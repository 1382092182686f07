"""``prism bench engine --structured``: the cost of constrained decoding."""
