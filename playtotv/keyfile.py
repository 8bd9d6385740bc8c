"""The ticket secret and director key an embedded node generates, kept next to its SQLite store.

An embedded node without ``auth.secret`` or ``auth.director_keys`` generates what is missing. Kept only in
memory, they would change at every restart: every ticket would stop verifying (each viewer would become
someone new) and every director would need the new key. So when the store is a SQLite file, the generated
ones are kept in ``<store file>.keys`` (JSON, mode 0600: only the owner may read it), written on the first
start and reused after. A store in memory (``sqlite:///:memory:``) or elsewhere (MongoDB) keeps them in
memory: nothing of the node's data outlives its process there either.

Everything here blocks on the file system: call it from a thread (``trio.to_thread``).
"""

from __future__ import annotations

import contextlib
import os

import msgspec

from playtotv.credentials import check_director_key, check_secret, generate_director_key, generate_secret
from playtotv.settings import ConfigError

SQLITE_SCHEME = "sqlite:///"
SQLITE_MEMORY = ":memory:"
KEYS_SUFFIX = ".keys"
#: Owner read and write only: the file holds the ticket signing secret.
FILE_MODE = 0o600


class GeneratedKeys(msgspec.Struct, omit_defaults=True):
    secret: str | None = None
    director_key: str | None = None


def keys_path(store_url: str) -> str | None:
    """``sqlite:///data/playtotv.db`` → ``data/playtotv.db.keys``; None for a store not in a local file."""
    if not store_url.startswith(SQLITE_SCHEME):
        return None
    path = store_url[len(SQLITE_SCHEME):]
    return None if path in ("", SQLITE_MEMORY) else path + KEYS_SUFFIX


def load_or_generate(path: str | None, *, secret: bool, director_key: bool) -> GeneratedKeys:
    """The generated secret (if ``secret``) and director key (if ``director_key``): read from ``path``
    when it holds them, else generated and (``path`` not None) written there."""
    kept = _read(path) if path is not None else GeneratedKeys()
    wanted = GeneratedKeys(
        secret=(kept.secret or generate_secret()) if secret else None,
        director_key=(kept.director_key or generate_director_key()) if director_key else None,
    )
    missing = (secret and not kept.secret) or (director_key and not kept.director_key)
    if path is not None and missing:
        # Keep what the file held but is not needed now (configured today, maybe not tomorrow).
        _write(path, GeneratedKeys(secret=wanted.secret or kept.secret,
                                   director_key=wanted.director_key or kept.director_key))
    return wanted


def _read(path: str) -> GeneratedKeys:
    try:
        with open(path, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        return GeneratedKeys()
    except OSError as e:
        raise ConfigError(f"{path}: cannot read the generated keys ({e.strerror or e})") from None
    try:
        keys = msgspec.json.decode(data, type=GeneratedKeys)
        if keys.secret is not None:
            check_secret(keys.secret)
        if keys.director_key is not None:
            check_director_key(keys.director_key)
    except (msgspec.DecodeError, ValueError) as e:
        # msgspec's and our messages say what is wrong, never the value itself.
        raise ConfigError(f"{path}: not a valid keys file ({e}); move it away to generate new keys") from None
    return keys


def _write(path: str, keys: GeneratedKeys) -> None:
    """Replace ``path`` atomically with a file created 0600 (never readable by others, even briefly)."""
    temporary = f"{path}.{os.getpid()}.tmp"
    try:
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, FILE_MODE)
        with os.fdopen(fd, "wb") as f:
            os.fchmod(f.fileno(), FILE_MODE)  # a leftover temporary file would keep its own mode
            f.write(msgspec.json.encode(keys) + b"\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(temporary, path)
    except OSError as e:
        with contextlib.suppress(OSError):  # best effort: the error to report is the one above
            os.unlink(temporary)
        raise ConfigError(f"{path}: cannot write the generated keys ({e.strerror or e})") from None
