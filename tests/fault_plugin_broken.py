"""A user's module that raises while it is imported (tests/test_plugins.py)."""

raise RuntimeError("the docking licence file is missing")
