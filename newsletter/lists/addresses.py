"""Email addresses: checked for syntax (never DNS) and normalised, fast for the common case.

email-validator is the judge; it costs about 19 µs an address, so a plain address that a
regular expression proves valid (a strict subset of what the library accepts, checked by a
property test) is normalised here without asking it: every address of a list is checked
on every send and every dry run.
"""

from __future__ import annotations

import re
from typing import Final

import email_validator
from email_validator.rfc_constants import CASE_INSENSITIVE_MAILBOX_NAMES

__all__ = [
    "address_key",
    "ascii_domain",
    "fast_normalise",
    "library_normalise",
    "needs_smtputf8",
    "smtp_address",
    "validate_address",
]

# A strict subset of what email-validator accepts, so the common case skips its ~19 µs:
# an ASCII dot-atom local part, then LDH labels and an alphabetic top-level domain.
_ATEXT = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]"
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_FAST_ADDRESS: Final = re.compile(rf"{_ATEXT}+(?:\.{_ATEXT}+)*@(?:{_LABEL}\.)+[A-Za-z]{{1,63}}")
# Read once at import; the library reads it on each call, so changing it later is not seen here.
_SPECIAL_USE_SUFFIXES: Final = tuple(
    "." + d.lower() for d in email_validator.SPECIAL_USE_DOMAIN_NAMES
)
# RFC 2142 mailboxes (info@, postmaster@, ...) which the library lowercases.
_LOWERCASED_MAILBOXES: Final = frozenset(CASE_INSENSITIVE_MAILBOX_NAMES)


def fast_normalise(raw: str) -> str | None:
    """The library's normalised form of a plain address, or None to ask the library.

    "--" is left to the library, which rejects "ab--" labels and decodes "xn--" ones.
    """
    if len(raw) > 254 or _FAST_ADDRESS.fullmatch(raw) is None or "--" in raw:
        return None
    at = raw.index("@")
    lowered = raw.lower()
    if at > 64 or lowered.endswith(_SPECIAL_USE_SUFFIXES):
        return None
    if lowered == raw:  # most lists: nothing to normalise
        return raw
    if lowered[:at] in _LOWERCASED_MAILBOXES:
        return lowered
    return raw[:at] + lowered[at:]


def library_normalise(raw: str) -> str:
    """Ask email-validator, with our rules pinned rather than taken from its globals."""
    return _validated(raw).normalized


def _validated(raw: str) -> email_validator.ValidatedEmail:
    try:
        return email_validator.validate_email(
            raw,
            check_deliverability=False,
            allow_smtputf8=True,
            allow_empty_local=False,
            allow_quoted_local=False,
            allow_domain_literal=False,
            allow_display_name=False,
            strict=False,
            globally_deliverable=True,
            test_environment=False,
        )
    except email_validator.EmailNotValidError as e:
        raise ValueError(str(e)) from None


def validate_address(raw: str) -> str:
    """The normalised address (domain lowercased), or ValueError with the library's reason."""
    return fast_normalise(raw) or library_normalise(raw)


def address_key(address: str) -> str:
    """The form in which two normalised addresses are one reader: for duplicates, the
    suppression list and the ledger.

    The domain is already lowercased (and an xn-- one decoded) by normalisation. The local
    part is compared ignoring case, as mail systems do in practice: lowercased, never
    case-folded, since folding turns `straße` into `strasse`, another mailbox.
    """
    return address.lower()


def ascii_domain(address: str) -> str:
    """The address with its domain in IDNA (xn--) form: what goes on the wire to a provider
    or server that does not take UTF-8 addresses. The local part is left as it is."""
    local, _, domain = address.rpartition("@")
    if domain.isascii():
        return address
    return f"{local}@{_validated(address).ascii_domain}"


def needs_smtputf8(address: str) -> bool:
    """A non-ASCII local part has no ASCII form: only a server offering SMTPUTF8 (RFC 6531)
    takes it. SMTP: skip such a recipient (`Sent.rejected`) when the server's EHLO does not
    list SMTPUTF8; SendGrid never takes one."""
    # most addresses are all ASCII: one C call says so, before any splitting
    return not address.isascii() and not address.rpartition("@")[0].isascii()


#: Why a server without SMTPUTF8 cannot take an address: for the report and the ledger.
NO_SMTPUTF8 = (
    "the address has non-ASCII characters before the @ and the server does not offer "
    "SMTPUTF8, so it cannot take it; mail this reader another way"
)


def smtp_address(address: str, *, smtputf8: bool) -> str | None:
    """The address for RCPT TO: as it is for a server offering SMTPUTF8 (the transaction
    then needs `MAIL FROM:<...> SMTPUTF8`), else with the domain in xn-- form; None if the
    server cannot take it at all (reject the recipient with `NO_SMTPUTF8`)."""
    if smtputf8:
        return address
    return None if needs_smtputf8(address) else ascii_domain(address)
