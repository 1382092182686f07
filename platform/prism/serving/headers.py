"""HTTP headers Prism reads or adds beyond the OpenAI API."""

REPLICA_HEADER = "x-prism-replica"
"""Response: the model replicas that served the call."""

PREDICTED_CACHED_HEADER = "x-prism-predicted-cached-tokens"
"""Response, under the ``prefix`` policy: prompt tokens the router expected to be cached."""

SESSION_HEADER = "x-session-id"
"""Request: a client's session id, for the ``session`` routing policy."""
