"""Adapter files: formats, metadata, compatibility, the SQLite catalogue."""
