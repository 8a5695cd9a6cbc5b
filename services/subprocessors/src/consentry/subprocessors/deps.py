"""FastAPI dependencies of the subprocessors API."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from consentry.eventing.db import Pool
from consentry.subprocessors.recipients.service import RecipientRules
from consentry.subprocessors.settings import ApiSettings


async def get_pool(request: Request) -> Pool:
    """The service's database pool."""
    pool: Pool = request.app.state.pool
    return pool


async def get_rules(request: Request) -> RecipientRules:
    """The registry's rules built from the API settings."""
    rules: RecipientRules = request.app.state.rules
    return rules


async def get_settings(request: Request) -> ApiSettings:
    """The API process's settings."""
    settings: ApiSettings = request.app.state.settings
    return settings


PoolDep = Annotated[Pool, Depends(get_pool)]
RulesDep = Annotated[RecipientRules, Depends(get_rules)]
SettingsDep = Annotated[ApiSettings, Depends(get_settings)]
