"""SendGrid's Event Webhook: bounces, drops, spam reports and unsubscribes become suppressions.

SendGrid signs each batch with ECDSA (P-256, SHA-256) over the timestamp and the body;
`cryptography` checks it against the public key (base64 DER) from the environment, so the
service needs no sendgrid client at run time. Events
carry our `custom_args` (`issue`, `list`) as top-level keys, so each suppression records
the issue whose mail led to it.
"""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Mapping
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from newsletter.errors import ConfigError, RequestRefused
from newsletter.storage.store import Suppression, SuppressionKind

PUBLIC_KEY_ENV = "SENDGRID_WEBHOOK_PUBLIC_KEY"
SIGNATURE_HEADER = "X-Twilio-Email-Event-Webhook-Signature"
TIMESTAMP_HEADER = "X-Twilio-Email-Event-Webhook-Timestamp"
#: A signed batch older (or newer) than this is refused: a replay, or a clock far off.
MAX_AGE_S = 600

#: Reasons in a `dropped` event that mean the address will never take mail.
_DROPPED_FOR_GOOD = ("bounce", "invalid")


def verify(env: Mapping[str, str], body: bytes, signature: str, timestamp: str) -> None:
    """Raise RequestRefused unless SendGrid signed this body at about this time."""
    key = env.get(PUBLIC_KEY_ENV, "").strip()
    if not key:
        raise ConfigError(
            f"{PUBLIC_KEY_ENV} is not set: copy the verification key from SendGrid (Mail "
            "Settings > Event Webhook > Signature Verification) into the environment"
        )
    if not signature or not timestamp:
        raise RequestRefused(401, "unsigned: the signature and timestamp headers are required")
    if not timestamp.isdigit() or abs(time.time() - int(timestamp)) > MAX_AGE_S:
        raise RequestRefused(400, f"stale: the timestamp is more than {MAX_AGE_S} s away")
    try:
        public_key = serialization.load_der_public_key(base64.b64decode(key, validate=True))
    except ValueError as exc:
        raise ConfigError(
            f"{PUBLIC_KEY_ENV} is not a SendGrid verification key (base64 DER): copy it again"
        ) from exc
    if not isinstance(public_key, ec.EllipticCurvePublicKey):
        raise ConfigError(f"{PUBLIC_KEY_ENV} is not an ECDSA key: copy SendGrid's again")
    try:
        der_signature = base64.b64decode(signature, validate=True)
        public_key.verify(der_signature, timestamp.encode() + body, ec.ECDSA(hashes.SHA256()))
    except (ValueError, InvalidSignature) as exc:
        raise RequestRefused(403, "the signature does not match this body") from exc


def _kind(event: Mapping[str, Any]) -> SuppressionKind | None:
    name = event.get("event")
    if name == "bounce":
        # SendGrid's `blocked` (a soft bounce) arrives as event bounce with type blocked.
        return "bounce" if event.get("type", "bounce") == "bounce" else None
    if name == "dropped":
        reason = str(event.get("reason", "")).lower()
        return "bounce" if any(word in reason for word in _DROPPED_FOR_GOOD) else None
    if name == "spamreport":
        return "complaint"
    if name in ("unsubscribe", "group_unsubscribe"):
        return "unsubscribe"
    return None


def suppressions(body: bytes, list_id: str) -> list[Suppression]:
    """The suppressions a batch of events calls for; RequestRefused if it is not a batch."""
    try:
        events = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise RequestRefused(400, "the body is not JSON") from None
    if not isinstance(events, list):
        raise RequestRefused(400, "the body is not a list of events")
    found = []
    for event in events:
        if not isinstance(event, dict) or not isinstance(event.get("email"), str):
            continue
        kind = _kind(event)
        if kind is None:
            continue
        ours = event.get("list") in (None, list_id)
        issue = event.get("issue") if ours and isinstance(event.get("issue"), str) else None
        reason = " ".join(
            str(part) for part in (event["event"], event.get("reason") or "") if part
        )[:300]
        found.append(Suppression(event["email"], reason, kind, "sendgrid webhook", issue))
    return found
