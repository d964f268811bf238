"""The single source of hvdagent's version (read by pyproject.toml)."""

__version__ = "0.1.0"
