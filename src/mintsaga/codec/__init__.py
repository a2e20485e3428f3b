"""Payload encryption: an AES-256-GCM codec for every Temporal payload and failure, keys from
the environment (codec/payloads.py), and the codec server the Temporal UI and CLI decode with
(codec/server.py, `python -m mintsaga.codec serve`)."""

from mintsaga.codec.payloads import (
    ALLOW_PLAINTEXT_SETTING,
    KEYS_SETTING,
    CodecError,
    CodecKeys,
    EncryptionCodec,
    PlaintextPayloadError,
    allow_plaintext_from_env,
    data_converter_from_env,
    keys_from_env,
    parse_keys,
)

__all__ = [
    "ALLOW_PLAINTEXT_SETTING",
    "KEYS_SETTING",
    "CodecError",
    "CodecKeys",
    "EncryptionCodec",
    "PlaintextPayloadError",
    "allow_plaintext_from_env",
    "data_converter_from_env",
    "keys_from_env",
    "parse_keys",
]
