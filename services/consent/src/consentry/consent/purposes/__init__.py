"""Purposes: a tenant's catalogue of processing purposes and their legal basis."""
