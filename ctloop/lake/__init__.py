"""The lake: immutable content-addressed snapshots on a folder or any fsspec URL."""
