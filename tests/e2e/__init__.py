"""End-to-end tests: the prism commands as subprocesses, as a user runs them."""
