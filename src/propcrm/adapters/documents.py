"""Where uploaded files (KYC documents) are kept: a directory outside the web root, one file a random key.

Nothing here is served by the static route: a page reads the bytes through :meth:`DocumentStore.read` after
it has checked who asks (``web/routes/traders.py``). Keys are random hex made here, never a name a user
chose, so a key cannot climb out of the directory; a file is written to a temporary name and renamed,
so a half-written upload is never read as a document.

The directory is ``PROPCRM_DOCUMENTS_DIR`` (``Settings.documents_dir``, handed to :func:`store_for`); without it, ``<database file>.documents/`` beside a SQLite
database, else ``./propcrm-documents``.
"""

from __future__ import annotations

import os
import re
import secrets
from pathlib import Path

from .settings import DOCUMENTS_DIR_ENV

_KEY = re.compile(r"^[0-9a-f]{40}$")


class DocumentStore:
    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def _path(self, key: str) -> Path:
        if not _KEY.match(key or ""):
            raise ValueError("not a document key")
        return self.root / key[:2] / key

    def put(self, data: bytes) -> str:
        """Keep ``data``; returns its new key."""
        key = secrets.token_hex(20)
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        temporary = path.with_suffix(".part")
        with open(temporary, "xb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(temporary, 0o600)
        temporary.replace(path)
        return key

    def read(self, key: str) -> bytes:
        return self._path(key).read_bytes()

    def delete(self, key: str) -> None:
        self._path(key).unlink(missing_ok=True)


def store_for(database_url: str, directory: Path | None = None) -> DocumentStore:
    """The store of a deployment (see the module's docstring): ``directory`` (the settings'
    ``PROPCRM_DOCUMENTS_DIR``) when given, else beside the SQLite database, else ``./propcrm-documents``."""
    if directory is not None:
        return DocumentStore(directory)
    if database_url.startswith("sqlite") and ":memory:" not in database_url:
        database = database_url.split("///", 1)[-1].split("?", 1)[0]
        if database:
            return DocumentStore(Path(database + ".documents"))
    return DocumentStore(Path.cwd() / "propcrm-documents")


__all__ = ["DOCUMENTS_DIR_ENV", "DocumentStore", "store_for"]
