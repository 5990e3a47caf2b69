"""Webhook deliveries: the outbox written with a job's final transition, and its dispatcher."""
