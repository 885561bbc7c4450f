"""The auditor's commands as an auditor runs them: history as table, JSON lines and CSV; verify; anchors taken,
kept and checked; a signed export checked offline; nothing judged without the auditor's public key."""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
import os
import subprocess
import sys
from decimal import Decimal
from pathlib import Path

import pytest

from events.store import EventStore
from events.subjects import Naming
from events.types import DealAmountChanged, DealStageChanged
from tests.builders import T0, deal_opened, envelope

pytestmark = pytest.mark.integration

CLI = [sys.executable, "-m", "services.cli"]
DAY = dt.timedelta(days=1)


def run(args: list[str], nats_url: str, naming: Naming) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "DEALSTREAM_NATS_URL": nats_url, "DEALSTREAM_PREFIX": naming.prefix}
    return subprocess.run([*CLI, *args], env=env, capture_output=True, text=True, timeout=60)


async def test_history_verify_and_a_signed_export(
    store: EventStore, nats_url: str, naming: Naming, tmp_path: Path
) -> None:
    await store.append([envelope(deal_opened("new"), "deal", "acme", T0)], 0)
    moved = DealStageChanged(from_stage="new", to_stage="proposal")
    await store.append([envelope(moved, "deal", "acme", T0 + DAY)], None)
    amount = DealAmountChanged(from_amount=Decimal(1000), to_amount=Decimal(1500), currency="EUR")
    await store.append([envelope(amount, "deal", "acme", T0 + 2 * DAY)], None)

    table = run(["history", "deal", "acme"], nats_url, naming)
    assert table.returncode == 0, table.stderr
    lines = table.stdout.splitlines()
    assert lines[0].split()[:6] == ["sequence", "occurred_at", "recorded_at", "type", "actor", "source"]
    assert "stage: new -> proposal" in lines[2] and "amount: 1000.00 -> 1500.00 EUR" in lines[3]

    as_of = (T0 + DAY).isoformat()
    rows = list(
        csv.DictReader(
            io.StringIO(run(["history", "deal", "acme", "--format", "csv", "--as-of", as_of], nats_url, naming).stdout)
        )
    )
    assert [r["type"] for r in rows] == ["deal.opened.v1", "deal.stage_changed.v1"]
    jsonl = run(["history", "deal", "acme", "--format", "jsonl"], nats_url, naming).stdout.splitlines()
    assert [json.loads(x)["data"]["type"] for x in jsonl] == [
        "deal.opened.v1",
        "deal.stage_changed.v1",
        "deal.amount_changed.v1",
    ]
    assert run(["history", "deal", "nope"], nats_url, naming).returncode == 1

    board = run(["board", "--at", (T0 + DAY).isoformat()], nats_url, naming)
    assert board.returncode == 0, board.stderr
    assert "2 events replayed" in board.stdout and "proposal" in board.stdout and "1 deals" in board.stdout

    verified = run(["audit", "verify"], nats_url, naming)
    assert verified.returncode == 0 and "0 broken chains" in verified.stdout, verified.stdout + verified.stderr

    key, export = tmp_path / "signing.pem", tmp_path / "log.jsonl"
    made = run(["audit", "keygen", "--out", str(key)], nats_url, naming)
    public = made.stdout.rsplit(" ", 1)[1].strip()
    assert made.returncode == 0 and oct(key.stat().st_mode & 0o777) == "0o600"
    assert run(["audit", "anchor", "--key", str(key)], nats_url, naming).returncode == 0
    assert run(["audit", "export", "--key", str(key), "--out", str(export)], nats_url, naming).returncode == 0
    checked = run(["audit", "check", str(export), "--public-key", public], nats_url, naming)
    assert checked.returncode == 0 and "signature valid: True" in checked.stdout, checked.stdout
    first, second, *rest = export.read_text().splitlines()
    export.write_text("\n".join([second, first, *rest]) + "\n")  # two events swapped
    assert run(["audit", "check", str(export), "--public-key", public], nats_url, naming).returncode == 1


async def test_anchors_round_trip_and_nothing_is_judged_without_the_auditors_key(
    store: EventStore, nats_url: str, naming: Naming, tmp_path: Path
) -> None:
    await store.append([envelope(deal_opened("new"), "deal", "acme", T0)], 0)
    await store.append([envelope(DealStageChanged(from_stage="new", to_stage="won"), "deal", "acme")], None)
    key, other, kept = tmp_path / "company.pem", tmp_path / "intruder.pem", tmp_path / "anchors.jsonl"
    public = run(["audit", "keygen", "--out", str(key)], nats_url, naming).stdout.rsplit(" ", 1)[1].strip()
    intruder = run(["audit", "keygen", "--out", str(other)], nats_url, naming).stdout.rsplit(" ", 1)[1].strip()

    no_anchor = run(["audit", "verify", "--public-key", public], nats_url, naming)
    assert no_anchor.returncode == 1 and "no anchor" in no_anchor.stdout, no_anchor.stdout
    own = tmp_path / "job-anchors.jsonl"
    taken = run(["audit", "anchor", "--key", str(key), "--keep", str(own)], nats_url, naming)
    assert taken.returncode == 0 and "up to sequence 2 (2 events, 1 aggregates)" in taken.stdout, taken.stdout
    assert run(["audit", "anchor", "--key", str(key), "--keep", str(own)], nats_url, naming).returncode == 0
    assert len(own.read_text().splitlines()) == 1  # nothing new in the log: no second anchor
    written = run(["audit", "anchors", "--out", str(kept)], nats_url, naming)
    assert written.returncode == 0 and "1 anchors" in written.stdout
    assert [json.loads(line)["anchor"]["last_sequence"] for line in kept.read_text().splitlines()] == [2]

    await store.append([envelope(DealStageChanged(from_stage="won", to_stage="lost"), "deal", "acme")], None)
    for extra in ([], ["--anchors", str(kept)]):
        verified = run(["audit", "verify", "--public-key", public, *extra], nats_url, naming)
        assert verified.returncode == 0, verified.stdout + verified.stderr
        assert "checked against the anchor" in verified.stdout and "(up to sequence 2, 2 events)" in verified.stdout
    again = run(["audit", "anchor", "--key", str(key), "--keep", str(own)], nats_url, naming)
    assert again.returncode == 0 and "up to sequence 3" in again.stdout
    first, second = (json.loads(line)["anchor"] for line in own.read_text().splitlines())
    assert second["previous"] != "" and second["last_sequence"] == 3 and first["previous"] == ""
    wrong = run(["audit", "verify", "--public-key", intruder, "--anchors", str(kept)], nats_url, naming)
    assert wrong.returncode == 1 and "not signed by the given public key" in wrong.stdout, wrong.stdout
    malformed = run(["audit", "verify", "--public-key", "not-a-key"], nats_url, naming)
    assert malformed.returncode == 2 and "--public-key" in malformed.stderr
    unkeyed = run(["audit", "verify", "--anchors", str(kept)], nats_url, naming)
    assert unkeyed.returncode == 2 and "refusing to judge" in unkeyed.stderr
    wildcard = run(["audit", "verify", "--stream", f"{naming.events_stream}.>"], nats_url, naming)
    assert wildcard.returncode == 2 and "is not a stream name" in wildcard.stderr
    plain = run(["audit", "verify"], nats_url, naming)
    assert plain.returncode == 0 and "not checked against anchors" in plain.stdout

    # An export re-signed by someone else's key passes only by the key inside it: that is no longer asked.
    export = tmp_path / "log.jsonl"
    assert run(["audit", "export", "--key", str(other), "--out", str(export)], nats_url, naming).returncode == 0
    unjudged = run(["audit", "check", str(export)], nats_url, naming)
    assert unjudged.returncode == 2 and "refusing to judge signatures without --public-key" in unjudged.stderr
    garbage = run(["audit", "check", str(key), "--public-key", public], nats_url, naming)
    assert garbage.returncode == 2 and "not an export" in garbage.stderr, garbage.stderr
    judged = run(["audit", "check", str(export), "--public-key", public], nats_url, naming)
    assert judged.returncode == 1 and "signature valid: False" in judged.stdout, judged.stdout
    assert run(["audit", "check", str(export), "--public-key", intruder], nats_url, naming).returncode == 1
