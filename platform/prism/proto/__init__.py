"""Prism's protobuf definitions; the Python stubs are generated from them (see ``build``)."""
