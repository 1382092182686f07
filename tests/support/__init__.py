"""Helpers shared by Prism's test suites (imported as ``support.*``)."""
