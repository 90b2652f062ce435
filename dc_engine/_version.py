"""The package version (one home: pyproject.toml reads it, files record it)."""

__version__ = "0.2.0"
