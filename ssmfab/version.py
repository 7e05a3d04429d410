"""The package version, in one place (the CLI, the audit trail and packaging read it)."""

__version__ = "0.1.0"
