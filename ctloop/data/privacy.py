"""Personal data: columns that look like emails, phones, names, card or national id numbers,
ticket-like ids and free-text places.

Detection runs once, at schema inference, on the column names and a sample of the values; the
decision (drop, salted hash or keep) is stored in the schema and applied to every batch before
any snapshot is written, so the lake never holds what was dropped or hashed. The model server
applies the same decision to every request before the model and the prediction log see it, and
a hashed column that identifies a person (`IDENTIFYING`) is never a model input.
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
# "Braund, Mr. Owen Harris", "Dr John Smith": a title before a name
HONORIFIC = re.compile(
    r"(^|[\s,])(mr|mrs|miss|ms|mx|master|dr|rev|mme|mlle|sir|lady|col|major|capt|don|dona|"
    r"countess|jonkheer|prof)\.?\s+[A-Z]",
    re.IGNORECASE,
)
# "St Louis, MO", "Montreal, PQ / Chesterville, ON", "Lyndhurst, England": a place, then a region
PLACE = re.compile(r"^[A-Z][\w'.-]*(?:[ /-]+[\w'.&()-]+)*,\s*(?:[A-Z]{2}\b|[A-Z][a-z])")
# "PC 17599", "STON/O2. 3101282", "113803": a code with a run of digits
TICKET = re.compile(r"^(?=.*\d{3})[A-Za-z0-9][A-Za-z0-9./ -]{2,23}$")

NAME_HINTS = {
    "email": ("email", "e_mail", "mail"),
    "phone": ("phone", "mobile", "telephone", "msisdn"),
    "name": ("first_name", "last_name", "full_name", "surname", "given_name", "customer_name"),
    "national_id": ("ssn", "national_id", "passport", "tax_id", "social_security"),
    "card": ("card_number", "credit_card", "pan", "iban", "account_number"),
    "ticket": ("ticket", "ticket_number", "booking_reference", "confirmation_number", "pnr"),
    "place": ("address", "street", "hometown", "home_town", "birthplace", "home_dest"),
}
NAME_EXACT = {"name": "name", "firstname": "name", "lastname": "name"}
# kinds that single out a person: hashed, they are useless to a model and stay out of it
IDENTIFYING = frozenset({"email", "phone", "name", "national_id", "card", "ticket"})


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
    if HONORIFIC.search(value):
        return "name"
    if PLACE.match(value):
        return "place"
    return None


def _ticket_like(sample: list[str], min_share: float) -> bool:
    """Codes with digit runs (most values), some with letters, mostly distinct: ticket-like ids.

    A numeric measurement has no letters (nor has its odd "n/a" digits), a category code
    repeats: neither is flagged.
    """
    codes = sum(1 for v in sample if TICKET.match(v.strip()))
    lettered = sum(1 for v in sample if any(c.isalpha() for c in v) and any(c.isdigit() for c in v))
    distinct = len(set(sample)) / len(sample)
    return (
        len(sample) >= 20
        and codes / len(sample) >= min_share
        and lettered / len(sample) >= 0.05
        and distinct >= 0.4
    )


def _plain_number(value: str) -> bool:
    """A number as a measurement would be written (no +, spaces, dashes or brackets)."""
    return bool(re.fullmatch(r"-?\d+(\.\d+)?", value))


def detect_personal(name: str, values: list[str], min_share: float = 0.6) -> str | None:
    """What personal data a column looks like, from its name or a sample of its text values."""
    lowered = name.lower().replace("-", "_").replace(" ", "_").replace(".", "_")
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
    if found:
        kind, hits = max(found.items(), key=lambda kv: kv[1])
        if hits / len(sample) >= min_share:
            return kind
    if _record_id(name):
        return None  # a record's own id (application_id, PassengerId) is not a person's ticket
    return "ticket" if _ticket_like(sample, min_share) else None


def _record_id(name: str) -> bool:
    lowered = name.lower()
    return lowered == "id" or lowered.endswith(("_id", "-id", " id")) or name.endswith(("Id", "ID"))


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


def hash_text(text: str, salt: bytes) -> str:
    """Salted SHA-256 of one value's text (first 16 hex digits)."""
    return hashlib.sha256(salt + text.encode()).hexdigest()[:16]


def hash_values(values: pa.Array, salt: bytes) -> pa.Array:
    """Salted SHA-256 of each value's text (first 16 hex digits); nulls stay null."""
    text = values if pa.types.is_string(values.type) else pc.cast(values, pa.string())
    out = [None if v is None else hash_text(v, salt) for v in text.to_pylist()]
    return pa.array(out, type=pa.string())


def value_text(value: object) -> str:
    """A value's text as ingestion hashes it (a CSV cell): whole floats without `.0`."""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def hash_value(value: object, salt: bytes) -> str | None:
    """The lake's hash of one value sent to the server (None and NaN stay missing)."""
    if value is None or (isinstance(value, float) and value != value):
        return None
    return hash_text(value_text(value), salt)


def identifying_columns(schema) -> list[str]:
    """Hashed columns of a schema that single out a person: never model inputs by default.

    `schema`: a `ctloop.data.schema.Schema` (or None: no columns).
    """
    if schema is None:
        return []
    return [
        c.name
        for c in schema.columns.values()
        if c.handling == "hash" and c.personal in IDENTIFYING
    ]


def without_identifying(frame, schema):
    """A training frame without the schema's hashed identifying columns (see `IDENTIFYING`)."""
    drop = [c for c in identifying_columns(schema) if c in frame.columns]
    return frame.drop(columns=drop) if drop else frame
