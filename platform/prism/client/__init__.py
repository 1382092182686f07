"""A typed client of Prism's gRPC API (``prism.v1.Generation`` and health checks).

```python
from prism.client import PrismClient

with PrismClient("127.0.0.1:9000") as client:
    model = client.list_models()[0].id
    for reply in client.generate(model, "Once upon a time", max_tokens=32, temperature=0):
        print(reply.text, end="", flush=True)
```

:class:`AsyncPrismClient` is the same over ``grpc.aio``. Failed calls raise
``grpc.RpcError``; :func:`describe_rpc_error` turns one into a line of text.
"""

from prism.client.aio import AsyncPrismClient
from prism.client.base import DEFAULT_TARGET
from prism.client.errors import describe_rpc_error, rpc_errors
from prism.client.messages import (
    SAMPLING_PARAMETERS,
    chat_request,
    generate_request,
    sampling_parameters,
)
from prism.client.streams import AsyncResponseStream, ResponseStream
from prism.client.sync import PrismClient

__all__ = [
    "DEFAULT_TARGET",
    "SAMPLING_PARAMETERS",
    "AsyncPrismClient",
    "AsyncResponseStream",
    "PrismClient",
    "ResponseStream",
    "chat_request",
    "describe_rpc_error",
    "generate_request",
    "rpc_errors",
    "sampling_parameters",
]
