"""Job state for async image and video generation.

Owns the `jobs` schema. Creates jobs together with their work message (an
outbox, relayed to RabbitMQ with publisher confirms), applies the outcomes
provider workers send back exactly once, fails and refunds jobs that run past
the timeout, and settles every finished job's hold with billing.
"""
