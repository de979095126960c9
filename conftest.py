"""Loads the claims plugin: every claims/*.yaml is a pytest item (see repro/pytest_plugin.py)."""

pytest_plugins = ["repro.pytest_plugin"]
