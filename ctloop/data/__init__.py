"""The data itself: reading batches, the schema, personal data, the demo stream."""
