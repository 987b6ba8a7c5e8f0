"""Local stand-ins for external services, used by `make demo` and the tests."""
