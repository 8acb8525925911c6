"""Lifecycle events: the transactional outbox, the CloudEvents format, and the buses it is
relayed to (NATS JetStream by default, Kafka by configuration, or none)."""
