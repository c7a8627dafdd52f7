"""The state key (streams.core.state): read from the settings or a file, created on first use."""

from __future__ import annotations

import os
import secrets
from pathlib import Path

__all__ = ["load_or_create_key"]


def load_or_create_key(*, key: str | None, key_file: Path | None, default_file: Path) -> tuple[bytes, str]:
    """The state key and where it came from: ``key`` itself, else the file ``key_file``, else
    ``default_file``, created with a fresh random key (mode 0600) when it does not exist."""
    if key:
        return _key_bytes(key), "STREAMSENSE_STATE_KEY"
    path = key_file or default_file
    if key_file is None and not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        # O_EXCL: two workers starting at once must not write two different keys.
        try:
            with open(path, "x", opener=lambda p, flags: os.open(p, flags, 0o600)) as f:
                f.write(secrets.token_hex(32) + "\n")
        except FileExistsError:
            pass
    text = path.read_text().strip()
    if not text:
        raise ValueError(f"the state key file {path} is empty")
    return _key_bytes(text), str(path)


def _key_bytes(text: str) -> bytes:
    try:
        raw = bytes.fromhex(text)
    except ValueError:
        raw = text.encode("utf-8")
    if len(raw) < 16:
        raise ValueError("the state key must be at least 16 bytes (32 hex digits)")
    return raw
