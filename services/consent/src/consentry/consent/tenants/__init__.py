"""Tenants: customer organisations, each with its own key for subject pseudonyms."""
