"""Names built from user text (prompts, tags): safe as one folder or file name, and collision-free where it matters."""

from __future__ import annotations

import hashlib
import re
import unicodedata

_UNSAFE = re.compile(r"[^A-Za-z0-9._,+=@-]+")


def text_hash(text: str, length: int = 12) -> str:
    """A short stable hash of ``text`` (sha256), for names that must not collide."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:length]


def safe_name(text: str, max_length: int = 120) -> str:
    """One path component made from ``text``: no separators, no ``..``, no leading ``-`` or ``.``, no control
    characters, at most ``max_length`` characters (a long text keeps a prefix plus a hash of the whole)."""
    norm = unicodedata.normalize("NFKD", str(text)).encode("ascii", "ignore").decode("ascii")
    name = _UNSAFE.sub("_", norm)
    name = re.sub(r"\.{2,}", "_", name)
    name = name.strip("_").lstrip("-.") or "unnamed"
    if len(name) > max_length:
        name = f"{name[: max_length - 13]}_{text_hash(str(text))}"
    return name
