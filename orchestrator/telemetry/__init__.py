"""Logging (and, later, metrics) setup."""
