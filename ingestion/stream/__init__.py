"""The event stream (NATS JetStream) → the lake: decode, validate, append, compact, consume."""
