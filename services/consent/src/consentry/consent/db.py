"""Tenant-scoped database access: every query of a request runs inside `tenant_transaction`
(shared by every service: `consentry.eventing.db`)."""

from __future__ import annotations

from consentry.eventing.db import set_tenant, tenant_transaction

__all__ = ["set_tenant", "tenant_transaction"]
