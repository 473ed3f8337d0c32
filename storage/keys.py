"""API keys for the contract's approved consumers, stored only as SHA-256 hashes.

The keys file (JSON, mode 0600) maps each key's hash to its consumer; the key itself is shown
once when created and never stored. Keys are long random tokens, so an unsalted SHA-256 is
enough: there is nothing to brute-force that is cheaper than guessing the token itself.
"""

from __future__ import annotations

import hashlib
import json
import secrets
from datetime import UTC, datetime
from pathlib import Path

from churnops.storage.atomic import write_atomic

KEY_PREFIX = "chk_"


def hash_key(key: str) -> str:
    """The stored form of a key.

    Args:
        key: The key as the client sends it.

    Returns:
        Its SHA-256, hex-encoded.
    """
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def _read(keys_file: Path) -> list[dict[str, str]]:
    if not keys_file.exists():
        return []
    try:
        data = json.loads(keys_file.read_text(encoding="utf-8"))
        entries = data["keys"]
        if not all(isinstance(e, dict) and {"consumer", "sha256"} <= e.keys() for e in entries):
            raise ValueError("each entry needs 'consumer' and 'sha256'")
    except (ValueError, KeyError, TypeError) as exc:
        raise ValueError(
            f"API keys file {keys_file} is not valid ({exc}); expected "
            '{"keys": [{"consumer": ..., "sha256": ..., "created_at": ...}]}'
        ) from exc
    return entries


def load_key_hashes(*, keys_file: Path) -> dict[str, str]:
    """Read the keys file.

    Args:
        keys_file: The hashed keys file (missing means no keys).

    Returns:
        Consumer by key hash.

    Raises:
        ValueError: When the file is not a valid keys file.
    """
    return {e["sha256"]: e["consumer"] for e in _read(keys_file)}


def create_key(*, keys_file: Path, consumer: str, approved_consumers: list[str]) -> str:
    """Create a key for an approved consumer and store its hash.

    Args:
        keys_file: The hashed keys file (created when missing, rewritten atomically).
        consumer: Who the key is for.
        approved_consumers: The contract's approved consumers.

    Returns:
        The new key, to show once.

    Raises:
        ValueError: When the consumer is not approved by the contract.
    """
    if consumer not in approved_consumers:
        raise ValueError(
            f"consumer {consumer!r} is not approved by the feature contract; approved consumers: "
            f"{', '.join(approved_consumers)} (add it under privacy.approved_consumers first)"
        )
    entries = _read(keys_file)
    key = KEY_PREFIX + secrets.token_urlsafe(32)
    entries.append(
        {"consumer": consumer, "sha256": hash_key(key), "created_at": datetime.now(UTC).isoformat()}
    )
    body = json.dumps({"keys": entries}, indent=2)
    write_atomic(keys_file, lambda tmp: tmp.write_text(body, encoding="utf-8"), mode=0o600)
    return key
