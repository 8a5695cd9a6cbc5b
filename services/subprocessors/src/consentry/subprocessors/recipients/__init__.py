"""The registry of recipients: who receives personal data from a tenant, where their
webhooks go, what they receive, and their signing secrets."""
