"""Delivery to customers' servers. For now: one guarded HTTP request (job callbacks); the
pipeline issue grows this into the durable outbox with its channels."""
