"""Notices to recipients: one delivery per notice and recipient, signed webhooks,
retries, dead letters and acknowledgements (GDPR Art. 19)."""
