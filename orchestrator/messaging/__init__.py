"""NATS: JetStream intake of requests, the outbox relay, periodic reports."""
