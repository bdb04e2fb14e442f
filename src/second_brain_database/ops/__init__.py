"""Operator tooling behind ``sbd check``, ``sbd rooms`` and friends."""
