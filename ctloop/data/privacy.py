"""Personal data: columns that look like emails, phones, names, card or national id numbers.

Detection runs once, at schema inference, on the column names and a sample of the values; the
decision (drop, salted hash or keep) is stored in the schema and applied to every batch before
any snapshot is written, so the lake never holds what was dropped or hashed.
"""

from __future__ import annotations

import hashlib
import os
import re

import pyarrow as pa
import pyarrow.compute as pc

from ctloop.config.settings import PersonalDataConfig
from ctloop.stores.storage import LakeFolder

EMAIL = re.compile(r"^[\w.+-]+@[\w-]+(\.[\w-]+)+$")
PHONE = re.compile(r"^\+?[\d\s().-]{7,20}$")
SSN = re.compile(r"^\d{3}-\d{2}-\d{4}$")
CARD = re.compile(r"^\d[\d -]{11,22}\d$")
IBAN = re.compile(r"^[A-Z]{2}\d{2}[A-Z0-9]{10,30}$")

NAME_HINTS = {
    "email": ("email", "e_mail", "mail"),
    "phone": ("phone", "mobile", "telephone", "msisdn"),
    "name": ("first_name", "last_name", "full_name", "surname", "given_name", "customer_name"),
    "national_id": ("ssn", "national_id", "passport", "tax_id", "social_security"),
    "card": ("card_number", "credit_card", "pan", "iban", "account_number"),
}
NAME_EXACT = {"name": "name", "firstname": "name", "lastname": "name"}


def _luhn(digits: str) -> bool:
    total, parity = 0, len(digits) % 2
    for i, ch in enumerate(digits):
        d = int(ch)
        if i % 2 == parity:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


def _looks_like(value: str) -> str | None:
    value = value.strip()
    if EMAIL.match(value):
        return "email"
    if SSN.match(value):
        return "national_id"
    if IBAN.match(value.replace(" ", "")):
        return "card"
    digits = re.sub(r"[ -]", "", value)
    if CARD.match(value) and 13 <= len(digits) <= 19 and digits.isdigit() and _luhn(digits):
        return "card"
    if PHONE.match(value) and sum(c.isdigit() for c in value) >= 9 and not _plain_number(value):
        return "phone"
    return None


def _plain_number(value: str) -> bool:
    """A number as a measurement would be written (no +, spaces, dashes or brackets)."""
    return bool(re.fullmatch(r"-?\d+(\.\d+)?", value))


def detect_personal(name: str, values: list[str], min_share: float = 0.6) -> str | None:
    """What personal data a column looks like, from its name or a sample of its text values."""
    lowered = name.lower().replace("-", "_").replace(" ", "_")
    if lowered in NAME_EXACT:
        return NAME_EXACT[lowered]
    for kind, hints in NAME_HINTS.items():
        if any(
            h == lowered or lowered.endswith("_" + h) or lowered.startswith(h + "_") for h in hints
        ):
            return kind
    sample = [v for v in values if v][:500]
    if not sample:
        return None
    found: dict[str, int] = {}
    for v in sample:
        kind = _looks_like(v)
        if kind:
            found[kind] = found.get(kind, 0) + 1
    if not found:
        return None
    kind, hits = max(found.items(), key=lambda kv: kv[1])
    return kind if hits / len(sample) >= min_share else None


def decide(name: str, personal: str | None, cfg: PersonalDataConfig) -> str | None:
    """drop, hash or keep for a column (explicit decisions first); None if not personal."""
    if name in cfg.columns:
        return cfg.columns[name]
    if personal is None:
        return None
    return cfg.action


def load_salt(cfg: PersonalDataConfig, folder: LakeFolder, name: str = "privacy.salt") -> bytes:
    """The configured salt, or a random one created once and kept in the lake (mode 600 locally).

    `folder`: the lake's root (`ctloop.stores.storage.open_lake(home).root`), so every host that
    writes to a shared lake hashes with the same salt.
    """
    if cfg.salt:
        return cfg.salt.encode()
    if folder.exists(name):
        return folder.read_bytes(name)
    # exclusive: concurrent first batches agree on one salt
    folder.create_exclusive(name, os.urandom(32).hex().encode(), private=True)
    return folder.read_bytes(name)


def hash_values(values: pa.Array, salt: bytes) -> pa.Array:
    """Salted SHA-256 of each value's text (first 16 hex digits); nulls stay null."""
    text = values if pa.types.is_string(values.type) else pc.cast(values, pa.string())
    out = [
        None if v is None else hashlib.sha256(salt + v.encode()).hexdigest()[:16]
        for v in text.to_pylist()
    ]
    return pa.array(out, type=pa.string())
