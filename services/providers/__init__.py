"""Synchronous egress to upstream AI providers.

Owns the routes (config/providers*.yaml), the upstream credentials, and one
adapter per upstream protocol. Every adapter is a translator between our
client schema (OpenAI chat) and its upstream's schema that also reports the
token usage; the gRPC server around them knows no protocol.
"""
