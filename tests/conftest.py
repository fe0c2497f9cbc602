"""Fixtures every test folder may use: the real stack and its clients (one stack
per pytest session, however many folders ask for it)."""

pytest_plugins = ["tests.support.stack_fixtures"]
