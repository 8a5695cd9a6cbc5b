"""The hash chain: appending entries and verifying a tenant's chain."""
