"""The tenant directory replica: tenants and API keys as the consent service announces them."""
