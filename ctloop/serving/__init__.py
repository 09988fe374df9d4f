"""The model server: several versions live, A/B and shadow, hot swap, prediction log, feedback."""
