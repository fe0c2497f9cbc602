"""Payments: top-up orders through payment gateways (Midtrans, Xendit) and
their notifications, credited to billing exactly once."""
