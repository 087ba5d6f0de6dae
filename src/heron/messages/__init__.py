"""Messages: the store, its queries, payload decoding and events."""
