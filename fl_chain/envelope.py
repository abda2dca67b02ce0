"""The sealed update envelope of the `sealed` privacy mode.

A participant's tensors are encrypted once with AES-256-GCM under a fresh content key;
that key is wrapped for each recipient (the aggregator and the validators) with X25519
against one ephemeral key, HKDF-SHA256 and AES-256-GCM. The header (federation, chain,
round, sender, schema, examples) stays in clear text so anyone can read it, and is
authenticated by every wrapped key and by the payload.

Every recipient opens the same update or none does. AES-GCM is not key-committing, and a
sender could wrap a different key (or garbage) for some recipients, so that the
aggregator opens an update the validators cannot, or the reverse. So the ephemeral key is
derived from the content key (which commits the envelope to that key), and a recipient
that unwraps the content key re-derives the ephemeral key and re-wraps the content key for
every listed recipient: any difference from the bytes in the envelope makes the whole
envelope `InconsistentEnvelope` for everyone able to unwrap it, and unopenable for the rest.

Byte layout (integers big-endian), version 2::

    magic            4   b"FLCE"
    version          1   1
    header length    4   H
    header           H   canonical JSON of `UpdateHeader`
    recipient count  2   R >= 1
    R times:
      public key    32   recipient X25519 public key (sorted ascending)
      wrapped key   48   AES-GCM(KEK_i, zero nonce, content key, AAD = wrap context)
    ephemeral key   32   X25519 public key of HKDF-SHA256(content key, info = ephemeral domain)
    nonce           12   payload nonce
    ciphertext len   8   C >= 16
    ciphertext       C   AES-GCM(content key, nonce, safetensors bytes, AAD = all bytes above)

KEK_i = HKDF-SHA256(X25519(ephemeral, recipient_i), info = domain | ephemeral | recipient_i).
The wrap context is every field above except the wrapped keys, so each recipient
authenticates the header, the recipient list, the ephemeral key and the nonce before
decrypting the payload. A KEK is used once (one ephemeral key per content key, one
content key per message), which is why a zero nonce is safe for the wrap; wrapping is
then deterministic, which is what lets a recipient check the others' wraps.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass

import numpy as np
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.x25519 import (
    X25519PrivateKey,
    X25519PublicKey,
)
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from eth_utils import is_checksum_address, to_checksum_address

from fl_chain.codec import decode_model, encode_model, schema_hash
from fl_chain.errors import (
    InconsistentEnvelope,
    InvalidHeader,
    MalformedEnvelope,
    NonFiniteValues,
    NotARecipient,
    SchemaMismatch,
    TamperedEnvelope,
    UsageError,
    WrongChain,
    WrongFederation,
    WrongRecipients,
    WrongRound,
    WrongSender,
)
from fl_chain.hashing import sha256_each
from fl_chain.jsonfiles import parse_json

FORMAT_VERSION = 1
ENCODING = "safetensors"
MAGIC = b"FLCE"
ENVELOPE_VERSION = 2

KEY_SIZE = 32
NONCE_SIZE = 12
TAG_SIZE = 16
WRAPPED_KEY_SIZE = KEY_SIZE + TAG_SIZE
MIN_RANDOMNESS = 32
MAX_HEADER = 4096  # a header is a few hundred bytes of JSON
MAX_RECIPIENTS = 4096  # the aggregator and the validators: each costs every opener a key agreement
# AES-GCM in `cryptography` takes at most 2**31 - 1 bytes per call.
MAX_PAYLOAD = 2**31 - 1 - TAG_SIZE

_KEK_INFO = b"fl-chain/envelope/v2/kek"
_EPHEMERAL_INFO = b"fl-chain/envelope/v2/ephemeral"
_SECRETS_INFO = b"fl-chain/envelope/v2/sealing-secrets"
_WRAP_NONCE = bytes(NONCE_SIZE)


@dataclass(frozen=True)
class UpdateHeader:
    """What an update claims to be; bound to the payload as associated data."""

    federation: str
    chain_id: int
    round: int
    sender: str
    schema_hash: str
    examples: int
    format_version: int = FORMAT_VERSION
    encoding: str = ENCODING

    def __post_init__(self) -> None:
        for name in ("federation", "sender"):
            value = getattr(self, name)
            if not isinstance(value, str) or not is_checksum_address(value):
                raise InvalidHeader(
                    f"header field {name!r} is not a checksummed address: {value!r}"
                )
        for name, minimum in (("chain_id", 1), ("round", 0), ("examples", 1)):
            value = getattr(self, name)
            if type(value) is not int or value < minimum:
                raise InvalidHeader(
                    f"header field {name!r} must be an integer >= {minimum}, found {value!r}"
                )
        digest = self.schema_hash
        if not (
            isinstance(digest, str) and len(digest) == 64 and set(digest) <= set("0123456789abcdef")
        ):
            raise InvalidHeader(
                f"header field 'schema_hash' is not a lowercase hex SHA-256: {digest!r}"
            )
        if self.format_version != FORMAT_VERSION:
            raise InvalidHeader(
                f"update format version {self.format_version!r} is not supported "
                f"(this build reads {FORMAT_VERSION})"
            )
        if self.encoding != ENCODING:
            raise InvalidHeader(
                f"update encoding {self.encoding!r} is not supported (expected {ENCODING!r})"
            )

    def to_bytes(self) -> bytes:
        """Canonical form: sorted-key compact JSON in UTF-8."""
        return json.dumps(asdict(self), sort_keys=True, separators=(",", ":")).encode("utf-8")

    @classmethod
    def from_bytes(cls, data: bytes) -> UpdateHeader:
        """Parse a header; anything but the canonical bytes of valid fields is `InvalidHeader`,
        so one header has exactly one byte form."""
        try:
            fields = parse_json(data.decode("utf-8"))
        except ValueError as exc:
            raise InvalidHeader(f"header is not UTF-8 JSON: {exc}") from exc
        if not isinstance(fields, dict):
            raise InvalidHeader(f"header is not a JSON object: {type(fields).__name__}")
        expected = set(cls.__dataclass_fields__)
        if set(fields) != expected:
            raise InvalidHeader(f"header fields {sorted(fields)} differ from {sorted(expected)}")
        header = cls(**fields)
        if header.to_bytes() != data:
            raise InvalidHeader("header is not in canonical form (sorted-key compact JSON)")
        return header


@dataclass(frozen=True)
class ExpectedUpdate:
    """What the chain says an update must be: the opener compares the header to it.

    Addresses may be given in any case; they are kept checksummed, as headers carry them.
    """

    federation: str
    chain_id: int
    round: int
    sender: str
    schema_hash: str
    recipients: frozenset[bytes] | None = None  # the round's recipients, when the caller knows them

    def __post_init__(self) -> None:
        for name in ("federation", "sender"):
            value = getattr(self, name)
            try:
                object.__setattr__(self, name, to_checksum_address(value))
            except (TypeError, ValueError) as exc:
                raise UsageError(f"expected {name} {value!r} is not an Ethereum address") from exc


@dataclass(frozen=True)
class OpenedUpdate:
    """An authenticated header and its decrypted, checked tensors (read-only arrays)."""

    header: UpdateHeader
    tensors: dict[str, np.ndarray]


def seal(
    tensors: Mapping[str, np.ndarray],
    header: UpdateHeader,
    recipients: Sequence[bytes],
    randomness: bytes | None = None,
) -> bytes:
    """Encrypt `tensors` for every X25519 public key in `recipients`.

    Without `randomness` the content key and nonce come from os.urandom. With
    `randomness` (at least 32 secret bytes, e.g. derived from the participant's own
    X25519 key and never published) they are derived by HKDF from it and a SHA-256 of the
    header, the recipient list and the payload. Why: sealing the same message again with
    the same keys gives byte-identical envelopes and content IDs, while any distinct
    message still gets its own keys and nonce (so AES-GCM never reuses a nonce across
    messages). The ephemeral key always follows from the content key.
    """
    if header.schema_hash != schema_hash(tensors):
        raise SchemaMismatch(
            f"header declares schema {header.schema_hash} "
            f"but the tensors have schema {schema_hash(tensors)}"
        )
    return seal_encoded(encode_model(tensors, {}), header, recipients, randomness)


def seal_encoded(
    payload: bytes,
    header: UpdateHeader,
    recipients: Sequence[bytes],
    randomness: bytes | None = None,
) -> bytes:
    """`seal` for tensors already encoded with `codec.encode_model` (no metadata), so a
    caller can time encoding and encryption apart; the header must describe them."""
    keys = _recipient_keys(recipients)
    header_bytes = header.to_bytes()
    if len(payload) > MAX_PAYLOAD:
        raise UsageError(
            f"the update is {len(payload)} bytes; an envelope holds at most {MAX_PAYLOAD}"
        )

    if randomness is None:
        secrets = os.urandom(KEY_SIZE + NONCE_SIZE)
    else:
        secrets = _derived_secrets(randomness, header_bytes, keys, payload)
    content_key = secrets[:KEY_SIZE]
    nonce = secrets[KEY_SIZE : KEY_SIZE + NONCE_SIZE]
    ephemeral = _ephemeral_of(content_key)
    ephemeral_public = ephemeral.public_key().public_bytes_raw()

    wrap_context = _wrap_context(header_bytes, keys, ephemeral_public, nonce)
    wrapped = [_wrap(content_key, ephemeral, ephemeral_public, key, wrap_context) for key in keys]
    recipients_field = [key + wrapped_key for key, wrapped_key in zip(keys, wrapped, strict=True)]
    prefix = _layout(header_bytes, recipients_field, ephemeral_public, nonce) + (
        len(payload) + TAG_SIZE
    ).to_bytes(8, "big")
    envelope = bytearray(len(prefix) + len(payload) + TAG_SIZE)
    envelope[: len(prefix)] = prefix
    # encrypted in place after the prefix: no intermediate copy of a large update
    AESGCM(content_key).encrypt_into(nonce, payload, prefix, memoryview(envelope)[len(prefix) :])
    return bytes(envelope)


def read_header(blob: bytes) -> UpdateHeader:
    """The clear-text header, readable without keys (e.g. by an auditor comparing it to
    the on-chain commitment); the first bytes of an envelope are enough. It is
    authenticated only by `open_envelope`: before that, it is merely what the bytes claim."""
    return _parse_header(_Reader(blob))


def _parse_header(reader: _Reader) -> UpdateHeader:
    magic = bytes(reader.take(len(MAGIC), "magic"))
    if magic != MAGIC:
        raise MalformedEnvelope(
            f"not an fl-chain update envelope: starts with {magic!r}, not {MAGIC!r}"
        )
    version = reader.integer(1, "version")
    if version != ENVELOPE_VERSION:
        raise MalformedEnvelope(
            f"envelope version {version} is not supported (this build reads {ENVELOPE_VERSION})"
        )
    header_length = reader.integer(4, "header length")
    if header_length > MAX_HEADER:
        raise MalformedEnvelope(f"envelope header of {header_length} bytes is longer than any header ({MAX_HEADER})")
    header_bytes = bytes(reader.take(header_length, "header"))
    try:
        return UpdateHeader.from_bytes(header_bytes)
    except InvalidHeader as exc:
        raise MalformedEnvelope(f"envelope header is invalid: {exc}") from exc


def open_envelope(
    blob: bytes, private_key: X25519PrivateKey, expected: ExpectedUpdate
) -> OpenedUpdate:
    """Authenticate, check against `expected` and decrypt an update.

    Order: parse, find this key among the recipients, unwrap the content key (which
    authenticates the header), check that the content key is the one every recipient was
    given, compare the header to `expected` (cheap rejections before decrypting a large
    payload), decrypt, then check the tensors' schema and values.
    """
    envelope = _parse(blob)
    if expected.recipients is not None and set(envelope.wrapped_keys) != expected.recipients:
        raise WrongRecipients(
            f"the update from {envelope.header.sender} is sealed for {len(envelope.wrapped_keys)} key(s), not for "
            f"exactly the round's {len(expected.recipients)} recipients (the aggregator and its validators)"
        )
    our_key = private_key.public_key().public_bytes_raw()
    wrapped_key = envelope.wrapped_keys.get(our_key)
    if wrapped_key is None:
        raise NotARecipient(
            f"the update from {envelope.header.sender} was sealed for "
            f"{len(envelope.wrapped_keys)} other key(s), not for X25519 key {our_key.hex()}"
        )
    try:
        shared = private_key.exchange(X25519PublicKey.from_public_bytes(envelope.ephemeral_public))
        kek = _kek(shared, envelope.ephemeral_public, our_key)
        content_key = AESGCM(kek).decrypt(_WRAP_NONCE, wrapped_key, envelope.wrap_context)
    except (InvalidTag, ValueError) as exc:  # ValueError: a low-order ephemeral key
        raise TamperedEnvelope(
            f"the update from {envelope.header.sender} does not authenticate: its header, "
            "recipient list, ephemeral key, nonce or wrapped key was altered"
        ) from exc
    _check_same_key_for_all(envelope, content_key)

    header = envelope.header
    _check_expected(header, expected)

    try:
        payload = AESGCM(content_key).decrypt(
            envelope.nonce, envelope.ciphertext, envelope.authenticated
        )
    except InvalidTag as exc:
        raise TamperedEnvelope(
            f"the ciphertext of the update from {header.sender} does not authenticate: "
            "its payload or another recipient's wrapped key was altered"
        ) from exc
    tensors, _ = decode_model(payload)
    found = schema_hash(tensors)
    if found != header.schema_hash:
        raise SchemaMismatch(
            f"the update from {header.sender} declares schema {header.schema_hash} "
            f"but its tensors have schema {found}"
        )
    _check_finite(header.sender, tensors)
    return OpenedUpdate(header, tensors)


@dataclass(frozen=True)
class _ParsedEnvelope:
    header: UpdateHeader
    wrapped_keys: dict[bytes, bytes]
    ephemeral_public: bytes
    nonce: bytes
    wrap_context: bytes
    authenticated: memoryview
    ciphertext: memoryview


class _Reader:
    """Bounds-checked cursor over untrusted bytes."""

    def __init__(self, blob: bytes) -> None:
        self.view = memoryview(blob)
        self.position = 0

    def take(self, size: int, what: str) -> memoryview:
        remaining = len(self.view) - self.position
        if size > remaining:
            raise MalformedEnvelope(
                f"envelope truncated: {what} needs {size} bytes at offset {self.position}, "
                f"only {remaining} remain"
            )
        chunk = self.view[self.position : self.position + size]
        self.position += size
        return chunk

    def integer(self, size: int, what: str) -> int:
        return int.from_bytes(self.take(size, what), "big")


def _parse(blob: bytes) -> _ParsedEnvelope:
    reader = _Reader(blob)
    header = _parse_header(reader)
    header_bytes = header.to_bytes()  # canonical: the bytes just read

    count = reader.integer(2, "recipient count")
    if count == 0:
        raise MalformedEnvelope("envelope has no recipients")
    if count > MAX_RECIPIENTS:
        raise MalformedEnvelope(f"envelope lists {count} recipients, more than a federation seals for ({MAX_RECIPIENTS})")
    wrapped_keys: dict[bytes, bytes] = {}
    for index in range(count):
        key = bytes(reader.take(KEY_SIZE, f"recipient {index} key"))
        wrapped_keys[key] = bytes(reader.take(WRAPPED_KEY_SIZE, f"recipient {index} wrapped key"))
    if len(wrapped_keys) != count:
        raise MalformedEnvelope("envelope lists a recipient twice")
    ephemeral_public = bytes(reader.take(KEY_SIZE, "ephemeral key"))
    nonce = bytes(reader.take(NONCE_SIZE, "nonce"))
    length = reader.integer(8, "ciphertext length")
    if not TAG_SIZE <= length <= MAX_PAYLOAD + TAG_SIZE:
        raise MalformedEnvelope(
            f"ciphertext length {length} is outside [{TAG_SIZE}, {MAX_PAYLOAD + TAG_SIZE}]"
        )
    authenticated = reader.view[: reader.position]
    ciphertext = reader.take(length, "ciphertext")
    if reader.position != len(reader.view):
        raise MalformedEnvelope(
            f"{len(reader.view) - reader.position} unexpected bytes after the ciphertext"
        )
    return _ParsedEnvelope(
        header=header,
        wrapped_keys=wrapped_keys,
        ephemeral_public=ephemeral_public,
        nonce=nonce,
        wrap_context=_wrap_context(header_bytes, list(wrapped_keys), ephemeral_public, nonce),
        authenticated=authenticated,
        ciphertext=ciphertext,
    )


def _recipient_keys(recipients: Sequence[bytes]) -> list[bytes]:
    """Recipient keys, validated and sorted so the envelope does not depend on their order."""
    keys = sorted(bytes(key) for key in recipients)
    if not keys:
        raise UsageError("an update must be sealed for at least one recipient")
    if len(set(keys)) != len(keys):
        raise UsageError("a recipient key is listed twice")
    if len(keys) > MAX_RECIPIENTS:
        raise UsageError(f"{len(keys)} recipients; an envelope holds at most {MAX_RECIPIENTS}")
    for key in keys:
        if len(key) != KEY_SIZE:
            raise UsageError(
                f"recipient key {key.hex()} is {len(key)} bytes, not a {KEY_SIZE}-byte X25519 key"
            )
    return keys


_PROBE = X25519PrivateKey.from_private_bytes(hashlib.sha256(b"fl-chain/envelope/probe").digest())


def is_usable_recipient(key: bytes) -> bool:
    """Whether an update can be sealed for `key`: 32 bytes and not a point of small order
    (with which every sender would derive the same, public, shared secret)."""
    if len(key) != KEY_SIZE:
        return False
    try:
        _PROBE.exchange(X25519PublicKey.from_public_bytes(bytes(key)))
    except ValueError:
        return False
    return True


def _ephemeral_of(content_key: bytes) -> X25519PrivateKey:
    """The ephemeral key follows from the content key: the key commitment of the envelope."""
    derived = HKDF(algorithm=hashes.SHA256(), length=KEY_SIZE, salt=None, info=_EPHEMERAL_INFO).derive(content_key)
    return X25519PrivateKey.from_private_bytes(derived)


def _wrap(content_key: bytes, ephemeral: X25519PrivateKey, ephemeral_public: bytes, recipient: bytes,
          wrap_context: bytes) -> bytes:
    kek = _kek(_shared_secret(ephemeral, recipient), ephemeral_public, recipient)
    return AESGCM(kek).encrypt(_WRAP_NONCE, content_key, wrap_context)


def _check_same_key_for_all(envelope: _ParsedEnvelope, content_key: bytes) -> None:
    """Re-derives the ephemeral key and every recipient's wrap from the unwrapped content
    key: a sender that sealed different keys for different recipients is caught by each
    recipient that can unwrap, so no two recipients ever open different updates."""
    ephemeral = _ephemeral_of(content_key)
    sender = envelope.header.sender
    if ephemeral.public_key().public_bytes_raw() != envelope.ephemeral_public:
        raise InconsistentEnvelope(
            f"the update from {sender} does not commit to its content key (its ephemeral key does not follow "
            "from it): recipients could open different updates"
        )
    for recipient, wrapped in envelope.wrapped_keys.items():
        try:
            expected = _wrap(content_key, ephemeral, envelope.ephemeral_public, recipient, envelope.wrap_context)
        except UsageError:  # a recipient key of small order: nobody can be sealed for it
            expected = b""
        if expected != wrapped:
            raise InconsistentEnvelope(
                f"the update from {sender} wraps its content key differently for recipient {recipient.hex()[:16]}…: "
                "recipients would not all open the same update"
            )


def _shared_secret(ephemeral: X25519PrivateKey, recipient_public: bytes) -> bytes:
    try:
        return ephemeral.exchange(X25519PublicKey.from_public_bytes(recipient_public))
    except ValueError as exc:  # a low-order point gives an all-zero secret
        raise UsageError(
            f"recipient key {recipient_public.hex()} is not a usable X25519 public key"
        ) from exc


def _wrap_context(
    header_bytes: bytes, keys: Sequence[bytes], ephemeral_public: bytes, nonce: bytes
) -> bytes:
    """The envelope's fields up to the payload, with the recipients' keys but not their
    wrapped content keys: what every key wrap authenticates."""
    return _layout(header_bytes, keys, ephemeral_public, nonce)


def _layout(
    header_bytes: bytes, recipient_fields: Sequence[bytes], ephemeral_public: bytes, nonce: bytes
) -> bytes:
    return b"".join(
        [
            MAGIC,
            ENVELOPE_VERSION.to_bytes(1, "big"),
            len(header_bytes).to_bytes(4, "big"),
            header_bytes,
            len(recipient_fields).to_bytes(2, "big"),
            *recipient_fields,
            ephemeral_public,
            nonce,
        ]
    )


def _kek(shared_secret: bytes, ephemeral_public: bytes, recipient_public: bytes) -> bytes:
    """Key-encryption key for one recipient, bound to both public keys."""
    info = _KEK_INFO + ephemeral_public + recipient_public
    return HKDF(algorithm=hashes.SHA256(), length=KEY_SIZE, salt=None, info=info).derive(
        shared_secret
    )


_DIGEST_CHUNK = 1 << 20


def _derived_secrets(
    randomness: bytes, header_bytes: bytes, keys: Sequence[bytes], payload: bytes
) -> bytes:
    """Content key, nonce and ephemeral key bytes bound to this exact message."""
    if len(randomness) < MIN_RANDOMNESS:
        raise UsageError(
            f"sealing randomness must be at least {MIN_RANDOMNESS} bytes, got {len(randomness)}"
        )
    digest = hashlib.sha256()
    digest.update(len(header_bytes).to_bytes(4, "big") + header_bytes)
    digest.update(len(keys).to_bytes(2, "big") + b"".join(keys))
    digest.update(len(payload).to_bytes(8, "big"))
    view = memoryview(payload)
    chunks = [view[offset : offset + _DIGEST_CHUNK] for offset in range(0, len(view), _DIGEST_CHUNK)]
    digest.update(b"".join(sha256_each(chunks)))  # chunked so both cores hash a large update
    return HKDF(
        algorithm=hashes.SHA256(),
        length=KEY_SIZE + NONCE_SIZE,
        salt=digest.digest(),
        info=_SECRETS_INFO,
    ).derive(bytes(randomness))


_ADDRESSED_TO = (
    ("federation", WrongFederation, "federation"),
    ("chain_id", WrongChain, "chain"),
    ("round", WrongRound, "round"),
)


def _check_expected(header: UpdateHeader, expected: ExpectedUpdate) -> None:
    for field, error, noun in _ADDRESSED_TO:
        found, wanted = getattr(header, field), getattr(expected, field)
        if found != wanted:
            raise error(f"the update from {header.sender} is for {noun} {found}, expected {wanted}")
    if header.sender != expected.sender:
        raise WrongSender(
            f"the update declares sender {header.sender}, but {expected.sender} committed it"
        )
    if header.schema_hash != expected.schema_hash:
        raise SchemaMismatch(
            f"the update from {header.sender} has schema {header.schema_hash}, "
            f"the global model has schema {expected.schema_hash}"
        )


def _check_finite(sender: str, tensors: Mapping[str, np.ndarray]) -> None:
    for name, tensor in tensors.items():
        if tensor.dtype.kind == "f" and not np.isfinite(tensor).all():
            nans = int(np.isnan(tensor).sum())
            infinities = int(np.isinf(tensor).sum())
            raise NonFiniteValues(
                f"tensor {name!r} from {sender} holds {nans} NaN and {infinities} infinite values"
            )
