"""The serving benchmark: streaming chat clients against a running server, HTTP or gRPC."""
