"""Ingest: a file or frame staged, validated and committed; the landing folder."""
