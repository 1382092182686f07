"""Generated ``prism.v1`` stubs live here (built from generation.proto, not kept in git)."""
