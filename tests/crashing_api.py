"""Run by ``test_api_logging``: the API, configured from the environment like ``dealstream api``, whose every
lead capture crashes (a 500), asked with each kind of credential. Prints the answers' statuses, one a line;
the process's own log goes to stderr in the format ``DEALSTREAM_LOG_FORMAT`` names."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import os
import sys
from pathlib import Path
from typing import Any

from litestar.testing import AsyncTestClient

from events.ledger import Ledger
from workers.settings import Settings


async def _crash(*_: Any, **__: Any) -> Any:
    raise RuntimeError("the ledger fell over")


async def main() -> None:
    Settings.from_env().configure_logging()
    from services.api.app import create_app
    from services.config import settings_from_env

    Ledger.capture_many = _crash  # type: ignore[method-assign]
    form_key, admin_key, typeform_secret, typeform_body = sys.argv[1:5]
    body = Path(typeform_body).read_bytes()  # noqa: ASYNC240 - before the server starts
    signature = base64.b64encode(hmac.new(typeform_secret.encode(), body, hashlib.sha256).digest()).decode()
    async with AsyncTestClient(create_app(settings_from_env()), raise_server_exceptions=False) as client:
        for _ in range(200):
            if (await client.get("/v1/health")).status_code == 200:
                break
            await asyncio.sleep(0.1)
        answers = [
            await client.post(
                "/v1/leads", json={"email": "a@example.com"}, headers={"Authorization": f"Bearer {form_key}"}
            ),
            await client.post("/v1/leads", json={"email": "a@example.com"}, headers={"X-Api-Key": admin_key}),
            await client.post(
                f"/v1/leads?key={form_key}",
                content=b"email=a%40example.com",
                headers={"Content-Type": "application/x-www-form-urlencoded"},
            ),
            await client.post(
                "/v1/webhooks/typeform",
                content=body,
                headers={"Content-Type": "application/json", "Typeform-Signature": f"sha256={signature}"},
            ),
        ]
    for answer in answers:
        print(answer.status_code)
    sys.stdout.flush()
    os._exit(0)


if __name__ == "__main__":
    asyncio.run(main())
