"""API keys: per-tenant keys with scopes, stored hashed, shown once, revocable."""
