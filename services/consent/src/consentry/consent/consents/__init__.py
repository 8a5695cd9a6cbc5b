"""Consents: give and withdraw per subject and purpose; ledger, current state, events."""
