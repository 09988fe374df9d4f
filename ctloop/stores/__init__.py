"""Stores: the state home, the storage layer of the lake, the prediction log, the catalog."""
