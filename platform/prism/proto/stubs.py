"""The generated ``prism.v1`` messages and service stubs.

Import them from here: ``from prism.proto.stubs import pb, rpc``. They are generated when the
package is built (a wheel ships them, an editable install writes them beside the ``.proto``
files); this module only imports them, it never generates or writes anything.
"""

try:
    import prism.proto.prism.v1.generation_pb2 as pb
    import prism.proto.prism.v1.generation_pb2_grpc as rpc
except ModuleNotFoundError as error:
    if not (error.name or "").startswith("prism.proto.prism.v1.generation_pb2"):
        raise
    raise ImportError(
        "Prism's gRPC stubs (prism/proto/prism/v1/generation_pb2*.py) are missing. They are "
        "generated when the package is built; in a checkout, run `make setup` or "
        "`python -m prism.proto.build` (needs grpcio-tools, a dev dependency)."
    ) from error

__all__ = ["pb", "rpc"]
