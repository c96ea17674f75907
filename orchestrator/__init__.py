"""Genesis: run risky code changes in isolated sandboxes and recommend a verdict."""

__version__ = "0.1.0"
