"""Billing: the IDR ledger behind every charge.

Accounts, API keys and two-phase spending (hold -> capture/release) over
PostgreSQL, served on gRPC (`aiport.v1.Billing`). Amounts are integer
micro-rupiah everywhere. The schema `billing` belongs to this service alone.

Modules: `rules` (pure logic), `ledger` (one transaction per operation),
`server` (gRPC servicer), `sweeper` (expires stale holds), `migrate`
(database + alembic), `cli` (`aiportctl`).
"""
