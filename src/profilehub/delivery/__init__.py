"""Push delivery of the org's events: signed webhooks and a NATS JetStream stream."""
