"""API keys for the contract's approved consumers, stored only as SHA-256 hashes.

The keys file (JSON, mode 0600) maps each key's hash to its consumer; the key itself is shown
once when created and never stored. Keys are long random tokens, so an unsalted SHA-256 is
enough: there is nothing to brute-force that is cheaper than guessing the token itself. A
revoked key stays in the file with its `revoked_at` time (an audit trail), and stops working.
A running service notices a changed file through `KeyRing` within its reload interval.

A key has one scope. A prediction key (an entry without `sources`, as every key written before
intake keys existed) is for the feature contract's approved consumers and works on the prediction
service only. An intake key (an entry with `sources`, a non-empty list) lets a producer deliver
those sources to the intake API and nothing else.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import secrets
import string
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from churnops.storage.atomic import write_atomic

log = logging.getLogger(__name__)

KEY_PREFIX = "chk_"


def hash_key(key: str) -> str:
    """The stored form of a key.

    Args:
        key: The key as the client sends it.

    Returns:
        Its SHA-256, hex-encoded.
    """
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def _read(keys_file: Path) -> list[dict[str, Any]]:
    # Missing or emptied (e.g. `: > api_keys.json`): no key is valid.
    if not keys_file.exists() or keys_file.stat().st_size == 0:
        return []
    try:
        data = json.loads(keys_file.read_text(encoding="utf-8"))
        entries = data["keys"]
        if not all(isinstance(e, dict) and {"consumer", "sha256"} <= e.keys() for e in entries):
            raise ValueError("each entry needs 'consumer' and 'sha256'")
        if not all(_valid_sources(e.get("sources", ["-"])) for e in entries):
            raise ValueError("an entry's 'sources' must be a non-empty list of source names")
    except (ValueError, KeyError, TypeError) as exc:
        raise ValueError(
            f"API keys file {keys_file} is not valid ({exc}); expected "
            '{"keys": [{"consumer": ..., "sha256": ..., "created_at": ..., "sources": [...] (intake keys)}]}'
        ) from exc
    return entries


def _valid_sources(sources: object) -> bool:
    return isinstance(sources, list) and bool(sources) and all(isinstance(s, str) for s in sources)


@dataclass(frozen=True)
class KeyGrant:
    """What one active key may do.

    Attributes:
        consumer: Who the key belongs to.
        sources: The sources an intake key may deliver; empty for a prediction key.
    """

    consumer: str
    sources: frozenset[str]


def load_grants(*, keys_file: Path) -> dict[str, KeyGrant]:
    """Read every active key of the file, prediction and intake keys alike.

    Args:
        keys_file: The hashed keys file (missing means no keys).

    Returns:
        What each active key may do, by key hash.

    Raises:
        ValueError: When the file is not a valid keys file.
    """
    return {
        e["sha256"]: KeyGrant(consumer=e["consumer"], sources=frozenset(e.get("sources", ())))
        for e in _read(keys_file)
        if not e.get("revoked_at")
    }


def load_key_hashes(*, keys_file: Path) -> dict[str, str]:
    """Read the keys file.

    Args:
        keys_file: The hashed keys file (missing means no keys).

    Returns:
        Consumer by key hash, for the prediction keys not revoked (intake keys are left out).

    Raises:
        ValueError: When the file is not a valid keys file.
    """
    return {h: g.consumer for h, g in load_grants(keys_file=keys_file).items() if not g.sources}


def list_keys(*, keys_file: Path) -> list[dict[str, Any]]:
    """Every key in the file, active or revoked.

    Args:
        keys_file: The hashed keys file (missing means no keys).

    Returns:
        The entries: `consumer`, `sha256`, `created_at` and, once revoked, `revoked_at`.

    Raises:
        ValueError: When the file is not a valid keys file.
    """
    return _read(keys_file)


def _write(keys_file: Path, entries: list[dict[str, Any]]) -> None:
    body = json.dumps({"keys": entries}, indent=2)
    write_atomic(keys_file, lambda tmp: tmp.write_text(body, encoding="utf-8"), mode=0o600)


def _matches(entry: dict[str, Any], name: str) -> bool:
    # A hash prefix of 8+ hex digits names one key; anything else names a consumer's keys.
    is_prefix = len(name) >= 8 and all(c in string.hexdigits for c in name)
    return entry["consumer"] == name or (is_prefix and entry["sha256"].startswith(name.lower()))


def revoke_keys(*, keys_file: Path, name: str) -> list[dict[str, Any]]:
    """Revoke the active keys of a consumer, or the one key whose hash starts with `name`.

    Args:
        keys_file: The hashed keys file (rewritten atomically).
        name: A consumer, or a prefix (8 or more hex digits) of a key's SHA-256.

    Returns:
        The entries revoked now.

    Raises:
        ValueError: When no active key matches, or the file is not a valid keys file.
    """
    entries = _read(keys_file)
    hits = [e for e in entries if not e.get("revoked_at") and _matches(e, name)]
    if not hits:
        raise ValueError(
            f"no active API key in {keys_file} belongs to consumer {name!r} or has a SHA-256 starting "
            "with it; `churnops keys list` shows them"
        )
    now = datetime.now(UTC).isoformat()
    for entry in hits:
        entry["revoked_at"] = now
    _write(keys_file, entries)
    return hits


class KeyRing:
    """The valid key hashes of a keys file, re-read when the file changes.

    At most once per `interval_s` a lookup stats the file (a few microseconds); a changed inode,
    size or modification time reloads it. Revoking or creating a key thus takes effect within
    the interval without a restart. A file that cannot be read or parsed makes every key invalid
    until it is fixed: an API key check must fail closed.

    Args:
        keys_file: The hashed keys file.
        interval_s: Longest time a change goes unnoticed (0: checked on every lookup).
        clock: Monotonic seconds.
    """

    def __init__(
        self, *, keys_file: Path, interval_s: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._file = keys_file
        self._interval = interval_s
        self._clock = clock
        self._signature: tuple[int, int, int] | None = None
        self._grants: dict[str, KeyGrant] = {}
        self._checked = clock()
        self._reload()

    def _stat(self) -> tuple[int, int, int] | None:
        try:
            st = os.stat(self._file)
        except FileNotFoundError:
            return None
        return (st.st_ino, st.st_size, st.st_mtime_ns)

    def _reload(self) -> None:
        self._signature = self._stat()
        try:
            self._grants = load_grants(keys_file=self._file)
        except (OSError, ValueError) as exc:
            log.error("API keys file unusable, refusing every key until it is fixed: %s", exc)
            self._grants = {}

    def grant(self, key: str) -> KeyGrant | None:
        """What a key may do, after re-reading the file if it changed.

        Args:
            key: The key as the client sent it.

        Returns:
            Its grant, or None when the key is unknown or revoked.
        """
        now = self._clock()
        if now - self._checked >= self._interval:
            self._checked = now
            if self._stat() != self._signature:
                self._reload()
        return self._grants.get(hash_key(key))

    def consumer(self, key: str) -> str | None:
        """The consumer a prediction key belongs to, after re-reading the file if it changed.

        Args:
            key: The key as the client sent it.

        Returns:
            The consumer, or None when the key is unknown, revoked or an intake key.
        """
        found = self.grant(key)
        return found.consumer if found is not None and not found.sources else None


def create_key(
    *,
    keys_file: Path,
    consumer: str,
    approved_consumers: Sequence[str],
    sources: Sequence[str] = (),
    known_sources: Sequence[str] = (),
) -> str:
    """Create a prediction key for an approved consumer, or an intake key, and store its hash.

    Args:
        keys_file: The hashed keys file (created when missing, rewritten atomically).
        consumer: Who the key is for: an approved consumer (prediction key) or the producer
            delivering `sources` (intake key).
        approved_consumers: The feature contract's approved consumers (prediction keys only).
        sources: The sources an intake key may deliver; empty makes a prediction key.
        known_sources: The sources that have a contract (intake keys only).

    Returns:
        The new key, to show once.

    Raises:
        ValueError: When a prediction key's consumer is not approved by the contract, or an
            intake key names a source without a contract.
    """
    if sources:
        unknown = sorted(set(sources) - set(known_sources))
        if unknown:
            raise ValueError(
                f"no source contract for {', '.join(unknown)}; sources: {', '.join(known_sources)}"
            )
    elif consumer not in approved_consumers:
        raise ValueError(
            f"consumer {consumer!r} is not approved by the feature contract; approved consumers: "
            f"{', '.join(approved_consumers)} (add it under privacy.approved_consumers first)"
        )
    entries = _read(keys_file)
    key = KEY_PREFIX + secrets.token_urlsafe(32)
    entry: dict[str, Any] = {
        "consumer": consumer,
        "sha256": hash_key(key),
        "created_at": datetime.now(UTC).isoformat(),
    }
    if sources:
        entry["sources"] = sorted(set(sources))
    entries.append(entry)
    _write(keys_file, entries)
    return key
