"""Heron: an open, self-hostable LPWAN device cloud."""

__version__ = "0.1.0"
