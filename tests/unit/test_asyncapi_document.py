"""The AsyncAPI document is built from the settings alone: the configured prefix, and no credential of a URL."""

from __future__ import annotations

import json

from events.config import NatsSettings
from events.subjects import Naming
from services.api.asyncapi import document


def test_the_document_follows_the_prefix_and_never_shows_a_password_from_the_nats_url() -> None:
    settings = NatsSettings(servers=("nats://api:s3cret-pass@nats-1:4222",), naming=Naming(prefix="acme"))
    doc = document(settings, "1.0.0")
    text = json.dumps(doc)
    assert "s3cret-pass" not in text and "nats-1:4222" in text
    assert doc["channels"]["inbox"]["address"] == "acme.in.lead"
    assert doc["channels"]["events"]["address"].startswith("acme.evt.")
    assert "ACME_EVENTS" in doc["channels"]["events"]["description"]


def test_every_reference_in_the_document_resolves() -> None:
    doc = document(NatsSettings(), "1.0.0")

    def refs(node: object) -> list[str]:
        if isinstance(node, dict):
            found = [node["$ref"]] if isinstance(node.get("$ref"), str) else []
            return found + [r for value in node.values() for r in refs(value)]
        if isinstance(node, list):
            return [r for value in node for r in refs(value)]
        return []

    unresolved = []
    for ref in set(refs(doc)):
        node: object = doc
        for part in ref.removeprefix("#/").split("/"):
            node = node.get(part) if isinstance(node, dict) else None
        if node is None:
            unresolved.append(ref)
    assert not unresolved, unresolved
