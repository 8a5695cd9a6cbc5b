"""Response models of the tenants API."""

from __future__ import annotations

from datetime import datetime
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field

TENANT_NAME_MAX = 200


class TenantInfo(BaseModel):
    """The calling key's tenant."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "id": "6f1c2d3e-4b5a-4c6d-8e7f-0a1b2c3d4e5f",
                    "name": "Acme Learning AB",
                    "created_at": "2026-11-29T08:00:00Z",
                }
            ]
        }
    )

    id: UUID = Field(description="the tenant id")
    name: str = Field(description="the customer organisation's name")
    created_at: datetime
