"""Logs say what happened: every line of a request carries its id, every append its event id, subject and
sequence, and no secret is ever written."""

from __future__ import annotations

import base64
import hashlib
import hmac
import subprocess
import sys
from pathlib import Path

import pytest
import structlog
from litestar import Litestar
from litestar.testing import AsyncTestClient

from events.config import NatsSettings
from services.auth import hash_key
from services.config import SCOPES
from tests.conftest import ADMIN_KEY, FORM_KEY, TYPEFORM_SECRET
from tests.faults.processes import ROOT, child_env

pytestmark = pytest.mark.integration


async def test_request_ids_and_appends_are_logged_without_secrets(api: AsyncTestClient[Litestar]) -> None:
    with structlog.testing.capture_logs(processors=[structlog.contextvars.merge_contextvars]) as logs:
        r = await api.post(
            "/v1/leads",
            json={"email": "a@example.com"},
            headers={"Authorization": f"Bearer {FORM_KEY}", "X-Request-Id": "req-abc-1"},
        )
        bad = await api.post("/v1/leads", json={"email": 5}, headers={"Authorization": f"Bearer {FORM_KEY}"})
    assert r.status_code == 202 and r.headers["x-request-id"] == "req-abc-1"
    appended = [e for e in logs if e["event"] == "event.appended"]
    assert len(appended) == 1
    line = appended[0]
    assert line["request_id"] == "req-abc-1" and line["credential"] == "website"
    assert line["event_id"] == r.json()["event_id"] and line["sequence"] == r.json()["sequence"]
    assert line["subject"].endswith("." + r.json()["aggregate_id"])
    rejected = [e for e in logs if e["event"] == "request.rejected"]
    assert rejected and rejected[0]["request_id"] == bad.headers["x-request-id"] and rejected[0]["status"] == 422
    text = repr(logs)
    assert FORM_KEY not in text and ADMIN_KEY not in text


@pytest.mark.parametrize("log_format", ["json", "console"])
def test_a_crash_logs_its_traceback_but_no_credential_in_any_format(
    log_format: str, nats_settings: NatsSettings, tmp_path: Path, fixtures_dir: Path
) -> None:
    """Each 500's traceback is logged; neither its frames' variables (which hold the request's headers) nor
    anything else in the line shows a key, a signature or a secret, in the console format as in JSON."""
    typeform_body = fixtures_dir / "typeform_form_response.json"
    digest = hmac.new(TYPEFORM_SECRET.encode(), typeform_body.read_bytes(), hashlib.sha256).digest()
    config = tmp_path / "api.toml"
    config.write_text(
        "\n".join(
            [
                f'[[api_keys]]\nid = "admin"\nsha256 = "{hash_key(ADMIN_KEY)}"\nscopes = {list(SCOPES)!r}',
                f'[[api_keys]]\nid = "website"\nsha256 = "{hash_key(FORM_KEY)}"\nscopes = ["leads:capture"]',
                f'[webhooks.typeform]\nsecret = "{TYPEFORM_SECRET}"',
            ]
        ).replace("'", '"')
        + "\n"
    )
    env = child_env(
        DEALSTREAM_LOG_FORMAT=log_format,
        DEALSTREAM_NATS_URL=nats_settings.servers[0],
        DEALSTREAM_PREFIX=nats_settings.naming.prefix,
        DEALSTREAM_CONFIG=str(config),
    )
    child = subprocess.run(
        [sys.executable, "-m", "tests.crashing_api", FORM_KEY, ADMIN_KEY, TYPEFORM_SECRET, str(typeform_body)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert child.returncode == 0, child.stderr[-3000:]
    assert child.stdout.split() == ["500", "500", "500", "500"], child.stdout + child.stderr[-3000:]
    log = child.stderr
    assert log.count("request.crashed") == 4 and log.count("the ledger fell over") >= 4, log[-3000:]
    assert "Traceback" in log
    secrets = {
        "admin key": ADMIN_KEY,
        "form key": FORM_KEY,
        "Typeform secret": TYPEFORM_SECRET,
        "Typeform signature": base64.b64encode(digest).decode(),
    }
    leaked = {name: log.count(secret) for name, secret in secrets.items() if secret in log}
    assert not leaked, leaked
