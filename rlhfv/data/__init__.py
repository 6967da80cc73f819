"""Data sets, preference formats and image handling."""
