"""The SendGrid request as a dict, built the plain way: the oracle the fast body is checked against.

`PayloadBuilder.body` assembles the JSON text from pre-encoded pieces for speed; this builds
the same request one dict per recipient, as SendGrid's documentation describes it, so a
test can say that the text parses to exactly this.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from newsletter.content.personalise import html_values, slot_values
from newsletter.delivery.message import Recipient, list_unsubscribe
from newsletter.delivery.providers.sendgrid import PayloadBuilder, safe_name
from newsletter.lists.addresses import ascii_domain


def personalization(builder: PayloadBuilder, recipient: Recipient) -> dict[str, Any]:
    raw = slot_values(builder.slots, recipient.fields)
    escaped = html_values(raw)
    substitutions = {}
    for (html_token, text_token), value, safe in zip(builder.tokens, raw, escaped, strict=True):
        substitutions[html_token] = safe
        substitutions[text_token] = value
    to = {"email": ascii_domain(recipient.email)}
    if recipient.name:
        to["name"] = safe_name(recipient.name)
    item: dict[str, Any] = {"to": [to], "substitutions": substitutions}
    unsubscribe = list_unsubscribe(
        recipient.unsubscribe_url,
        builder.unsubscribe_mailto,
        recipient.fields.get("token", ""),
        fold=False,
    )
    if unsubscribe:
        headers = {"List-Unsubscribe": unsubscribe}
        if "<https://" in unsubscribe:
            headers["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"
        item["headers"] = headers
    return item


def payload(builder: PayloadBuilder, batch: Sequence[Recipient]) -> dict[str, Any]:
    """The request as a dict: what `builder.body(batch)` must equal once parsed."""
    return {**builder.base, "personalizations": [personalization(builder, r) for r in batch]}
