"""Residents' personal data sealed at rest, with keys that never live in the database.

A `Keyring` holds the data keys (AES-256-GCM) and a separate key for blind
indexes (HMAC-SHA256), read from the environment (`KT_DATA_KEYS`,
`KT_BLIND_INDEX_KEY`; see `ServiceSettings.keyring`). The first data key seals,
every key opens: each sealed value names the key that sealed it, so a new key
can go first and old rows stay readable until they are sealed again.

A sealed value is bytes: `kt1:<key id>:` + 12-byte random nonce + ciphertext
and tag. The header is authenticated (associated data), so a changed key id or
a flipped byte is refused, never opened into garbage. Callers seal one blob per
row (a resident's fields as JSON), not one per field: intake speed is measured.

A blind index is a keyed hash of a normalised value, for the few lookups that
must stay possible (equality only): whoever reads the database learns which
rows share a value, not the value. Each use has its own purpose, so equal
values in different fields do not hash alike.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
import re
from collections.abc import Mapping
from typing import Any

import orjson
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

PREFIX = b"kt1:"
NONCE_BYTES = 12
DEV_KEY_PREFIX = "dev"
"""Key ids of the development keys made under var/: production refuses them."""
_KEY_ID = re.compile(r"^[A-Za-z0-9_.-]{1,32}$")


class CryptoError(RuntimeError):
    """A key is missing, malformed or wrong: said plainly, never as garbage data."""


class UnknownKey(CryptoError):
    pass


class CannotOpen(CryptoError):
    pass


def decode_key(text: str, *, what: str) -> bytes:
    """A base64 (standard or URL-safe) key of 32 bytes."""
    try:
        raw = base64.b64decode(text.strip().replace("-", "+").replace("_", "/") + "==")
    except (binascii.Error, ValueError):
        raise CryptoError(f"{what} is not base64") from None
    if len(raw) != 32:
        raise CryptoError(f"{what} must be 32 bytes (base64 of 32 random bytes), not {len(raw)}")
    return raw


def parse_data_keys(text: str) -> list[tuple[str, bytes]]:
    """`"k2:<base64>,k1:<base64>"` -> [(id, key), ...], newest (sealing) first."""
    keys = []
    for part in filter(None, (p.strip() for p in text.split(","))):
        key_id, sep, value = part.partition(":")
        if not sep or not _KEY_ID.match(key_id):
            raise CryptoError("KT_DATA_KEYS is `id:base64key,id:base64key`, ids of letters, digits, . _ -")
        keys.append((key_id, decode_key(value, what=f"data key {key_id!r}")))
    if not keys:
        raise CryptoError("KT_DATA_KEYS holds no key")
    if len({key_id for key_id, _ in keys}) != len(keys):
        raise CryptoError("KT_DATA_KEYS names a key id twice")
    return keys


def new_key() -> str:
    """32 random bytes in base64: a data key or a blind-index key."""
    return base64.b64encode(os.urandom(32)).decode()


def is_sealed(value: object) -> bool:
    return isinstance(value, (bytes, bytearray, memoryview)) and bytes(value[: len(PREFIX)]) == PREFIX


class Keyring:
    """Seals and opens with the data keys; makes blind indexes with the index key."""

    def __init__(
        self, data_keys: list[tuple[str, bytes]], blind_index_key: bytes, previous_blind_index_key: bytes | None = None
    ):
        if not data_keys:
            raise CryptoError("a keyring needs at least one data key")
        # One AESGCM object per key, made once: building it per call costs more than sealing.
        self._ciphers = {key_id: AESGCM(key) for key_id, key in data_keys}
        self._headers = {key_id: PREFIX + key_id.encode() + b":" for key_id, _ in data_keys}
        self.sealing_key_id = data_keys[0][0]
        self.key_ids = [key_id for key_id, _ in data_keys]
        self._sealing = (self._ciphers[self.sealing_key_id], self._headers[self.sealing_key_id])
        self._index = hmac.new(blind_index_key, digestmod=hashlib.sha256)  # copied per use: no key set-up each time
        # While the blind-index key is being rotated (`kent-together rekey`), lookups match hashes made with
        # either key; new and recomputed indexes use the current one only.
        self._previous_index = (
            hmac.new(previous_blind_index_key, digestmod=hashlib.sha256)
            if previous_blind_index_key and previous_blind_index_key != blind_index_key
            else None
        )
        self._materials = (
            frozenset(key for _, key in data_keys)
            | {blind_index_key}
            | ({previous_blind_index_key} if previous_blind_index_key else set())
        )

    @classmethod
    def from_text(cls, data_keys: str, blind_index_key: str, previous_blind_index_key: str = "") -> Keyring:
        previous = (
            decode_key(previous_blind_index_key, what="KT_BLIND_INDEX_KEY_PREVIOUS")
            if previous_blind_index_key.strip()
            else None
        )
        return cls(parse_data_keys(data_keys), decode_key(blind_index_key, what="KT_BLIND_INDEX_KEY"), previous)

    @property
    def has_previous_index_key(self) -> bool:
        return self._previous_index is not None

    def shares_material_with(self, other: Keyring) -> bool:
        """Whether any key of this keyring is one of `other`'s (production against the development keys)."""
        return bool(self._materials & other._materials)

    def seal(self, plaintext: bytes) -> bytes:
        cipher, header = self._sealing
        nonce = os.urandom(NONCE_BYTES)
        return header + nonce + cipher.encrypt(nonce, plaintext, header)

    def open(self, sealed: bytes) -> bytes:
        sealed = bytes(sealed)
        if not sealed.startswith(PREFIX):
            raise CannotOpen("not a sealed value (no kt1: header)")
        end = sealed.find(b":", len(PREFIX))
        key_id = sealed[len(PREFIX) : end].decode("ascii", "replace") if end > 0 else ""
        cipher = self._ciphers.get(key_id)
        if cipher is None:
            raise UnknownKey(
                f"sealed with data key {key_id!r}, which KT_DATA_KEYS does not hold (it holds {self.key_ids}): "
                "keep old keys after the new one until every row is sealed again"
            )
        header, rest = sealed[: end + 1], sealed[end + 1 :]
        try:
            return cipher.decrypt(rest[:NONCE_BYTES], rest[NONCE_BYTES:], header)
        except InvalidTag:
            raise CannotOpen(
                f"cannot open a value sealed with data key {key_id!r}: the key under that id is not the one "
                "that sealed it, or the stored bytes were changed"
            ) from None

    def key_id_of(self, sealed: bytes) -> str:
        sealed = bytes(sealed)
        return sealed[len(PREFIX) : sealed.find(b":", len(PREFIX))].decode("ascii", "replace")

    def seal_json(self, value: Any) -> bytes:
        return self.seal(orjson.dumps(value))

    def open_json(self, sealed: bytes) -> Any:
        return orjson.loads(self.open(sealed))

    def seal_text(self, text: str | None) -> bytes | None:
        return None if text is None else self.seal(text.encode())

    def open_text(self, sealed: bytes | None) -> str | None:
        return None if sealed is None else self.open(sealed).decode()

    def seal_field(self, row: dict[str, Any], field: str, *, into: str) -> dict[str, Any]:
        """`row` as stored: its text `field` sealed into the column `into` (e.g. details -> sealed_details)."""
        stored = {k: v for k, v in row.items() if k != field}
        stored[into] = self.seal_text(row[field])
        return stored

    def open_field(self, row: Mapping[str, Any], column: str, *, as_: str) -> dict[str, Any]:
        """A stored row with its sealed text `column` opened as `as_` (the column stays alongside)."""
        return {**row, as_: self.open_text(row[column])}

    def open_if_sealed(self, value: bytes) -> bytes:
        """Rows written before sealing began (or on topics that carry nothing personal) pass as they are."""
        return self.open(value) if is_sealed(value) else value

    def blind_index(self, purpose: str, value: str) -> str:
        """A keyed hash of an already-normalised `value`: 128 bits, hex. Equal values, equal index."""
        mac = self._index.copy()
        mac.update(purpose.encode() + b"\x00" + value.encode())
        return mac.digest()[:16].hex()

    def blind_indexes(self, purpose: str, value: str) -> tuple[str, ...]:
        """What a lookup of `value` matches: its index under the current key, and under the previous one if set.

        Stored indexes are made with `blind_index` (the current key) only; the previous key
        (`KT_BLIND_INDEX_KEY_PREVIOUS`) keeps rows indexed before a key change findable until
        `kent-together rekey` has recomputed them.
        """
        current = self.blind_index(purpose, value)
        if self._previous_index is None:
            return (current,)
        mac = self._previous_index.copy()
        mac.update(purpose.encode() + b"\x00" + value.encode())
        return (current, mac.digest()[:16].hex())


def dev_keyring_text() -> tuple[str, str]:
    """Fresh development keys: (`KT_DATA_KEYS`, `KT_BLIND_INDEX_KEY`), the data key's id marked `dev`."""
    return f"{DEV_KEY_PREFIX}-{os.urandom(3).hex()}:{new_key()}", new_key()
