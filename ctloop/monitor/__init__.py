"""Monitor: drift of served inputs and online performance from feedback."""
