"""The caller's webhook signing secret: read it (created on first use) or rotate it.

Every webhook delivered for a submission is signed with its requester's secret, so a receiver
verifies with the secret of the one account that submits to it, and no client can sign events
for another's endpoint. Rotating takes effect at the next delivery attempt.
"""

from __future__ import annotations

from fastapi import APIRouter

from db.repositories import webhook_secrets
from db.types import utcnow
from serve_app.deps import CurrentUser, SessionDep
from serve_app.schemas import WebhookSecretOut
from serve_app.webhooks import new_webhook_secret

router = APIRouter(tags=["webhooks"])


@router.get("/me/webhook-secret", response_model=WebhookSecretOut)
async def read_secret(session: SessionDep, user: CurrentUser) -> WebhookSecretOut:
    stored = await webhook_secrets.ensure(session, user_id=user.id, secret=new_webhook_secret(), now=utcnow())
    await session.commit()
    return WebhookSecretOut(secret=stored.secret, created_at=stored.created_at)


@router.post("/me/webhook-secret", response_model=WebhookSecretOut)
async def rotate_secret(session: SessionDep, user: CurrentUser) -> WebhookSecretOut:
    stored = await webhook_secrets.replace(session, user_id=user.id, secret=new_webhook_secret(), now=utcnow())
    await session.commit()
    return WebhookSecretOut(secret=stored.secret, created_at=stored.created_at)
