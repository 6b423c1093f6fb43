"""Names built from user text (prompts, tags): safe as one folder or file name, and collision-free where it matters."""

from __future__ import annotations

import hashlib
import re
import unicodedata

_UNSAFE = re.compile(r"[^A-Za-z0-9._,+=@-]+")
HASH_LENGTH = 12


def text_hash(text: str, length: int = HASH_LENGTH) -> str:
    """A short stable hash of ``text`` (the first ``length`` hex digits of its sha256)."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:length]


def safe_name(text: str, max_length: int = 120) -> str:
    """One path component made from ``text``, at most ``max_length`` characters.

    Kept: ASCII letters, digits and ``. _ , + = @ -`` (accents are dropped, every run of other characters becomes
    one ``_``); then ``..`` becomes ``_``, runs of ``_`` become one, and leading ``_ - .`` and trailing ``_`` are
    removed. The result has no separator, is never ``.`` or ``..``, never starts like a flag or a hidden file, and
    holds no control character.

    A text that needed any change (or was too long) gets ``_<hash of the whole text>`` appended, so two different
    texts never share a name: ``a_b`` stays ``a_b`` while ``a/b`` becomes ``a_b_<hash>``.

    >>> safe_name("a_hamburger")
    'a_hamburger'
    >>> safe_name("../../x") == "x_" + text_hash("../../x")
    True
    """
    text = str(text)
    norm = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode("ascii")
    name = _UNSAFE.sub("_", norm)
    name = re.sub(r"_+", "_", re.sub(r"\.{2,}", "_", name))
    name = re.sub(r"^[-._]+", "", name).rstrip("_")
    if name == text and 0 < len(name) <= max_length:
        return name
    stem = (name or "unnamed")[: max_length - HASH_LENGTH - 1].rstrip("_")
    return f"{stem}_{text_hash(text)}"
