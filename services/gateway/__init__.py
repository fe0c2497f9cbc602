"""The public API behind the edge: auth, validation, pricing and orchestration.

No SQL and no upstream HTTP here: money goes through billing, upstream calls
through providers, both over gRPC.
"""
