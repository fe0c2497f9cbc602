"""Fault-injection suite: SIGKILLs and upstream faults under a steady mixed load."""
