"""Provider webhooks (SendGrid's Event Webhook): filled in by issue #6."""

from __future__ import annotations

from fastapi import APIRouter
from sqlalchemy.orm import Session, sessionmaker
from temporalio.client import Client

from touchpoint.config import Settings


def make_router(settings: Settings, client: Client, sessions: sessionmaker[Session]) -> APIRouter:
    """Routes for provider callbacks."""
    return APIRouter()
