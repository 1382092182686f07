"""The generated ``prism.v1`` messages and service stubs, generated first if needed.

Import them from here: ``from prism.proto.stubs import pb, rpc``.
"""

from prism.proto.build import ensure_stubs

ensure_stubs()

from prism.proto.prism.v1 import generation_pb2 as pb  # noqa: E402
from prism.proto.prism.v1 import generation_pb2_grpc as rpc  # noqa: E402

__all__ = ["pb", "rpc"]
