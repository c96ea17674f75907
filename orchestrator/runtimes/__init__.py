"""Sandbox runtimes: one protocol (``base.Runtime``), one module per backend."""
