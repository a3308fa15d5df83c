"""The keyed user-id hash: the precomputed-pad HMAC is exactly HMAC-SHA256 truncated, for any key and id."""

from __future__ import annotations

import hashlib
import hmac

from hypothesis import given
from hypothesis import strategies as st

from exporter.ingest import UserHasher

HEX_IDS = st.text(alphabet="0123456789abcdef", min_size=16, max_size=64)


@given(key=st.binary(min_size=1, max_size=200), user_id=HEX_IDS)
def test_the_hash_is_hmac_sha256_truncated_to_16_bytes(key: bytes, user_id: str) -> None:
    """Short keys, 64-byte keys and keys longer than a block (hashed first) all match the stdlib's HMAC."""
    expected = hmac.new(key, user_id.encode("ascii"), hashlib.sha256).digest()[:16]
    assert UserHasher(key)(user_id) == expected


@given(key=st.binary(min_size=16, max_size=64))
def test_the_fingerprint_is_public_and_key_specific(key: bytes) -> None:
    """The fingerprint is the HMAC of a fixed label: stable for a key, different for another key."""
    expected = hmac.new(key, b"flakedrop-telemetry key fingerprint", hashlib.sha256).hexdigest()[:16]
    assert UserHasher(key).fingerprint() == expected
    assert UserHasher(key + b"x").fingerprint() != expected
