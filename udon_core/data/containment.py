"""The one containment rule of a benchmark folder: every file it names is read from inside it.

What the description names becomes part of a path, so it is held to a grammar: domain names are
identifiers, split stems and evaluation split names are plain names (no separator, no leading dot, no NUL),
image paths are relative, without ``..``, NUL or control characters. What a name or path points at is then
resolved with every symlink followed and must stay inside the folder it belongs to (``info_files/`` for
info files, ``images/`` for images, the folder itself for ``benchmark.json``) or inside a *link root*: the
DVC cache, which DVC's ``cache.type`` symlink or hardlink links every workspace file into. A path that
fails is refused before the file is opened.

The rule guards the DVC pin: a file read from outside the folder is not covered by the data version the
run records, so a model's lineage would name data that does not hold what it trained on.
"""

from __future__ import annotations

import os
import re
import stat
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from udon_core.errors import shown

MAX_NAME = 64
DOMAIN_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
PLAIN_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
MAX_LINK_HOPS = 40  # why: as the kernel's own limit on symlinks followed in one path (ELOOP)


def domain_name_problem(name: object) -> str | None:
    """Why ``name`` cannot be a domain name, or None. A domain names a folder of ``info_files/``, a teacher
    head and metric keys, so it is an ASCII identifier."""
    if not isinstance(name, str) or not DOMAIN_NAME.fullmatch(name) or len(name) > MAX_NAME:
        return (f"must be an identifier (ASCII letters, digits and _, not starting with a digit, at most "
                f"{MAX_NAME} characters), got {shown(name)}")
    return None


def plain_name_problem(name: object) -> str | None:
    """Why ``name`` cannot be a split stem or evaluation split name, or None: a file name without a folder,
    ASCII letters, digits, ``_``, ``-`` and ``.``, not starting with a dot."""
    if not isinstance(name, str) or not PLAIN_NAME.fullmatch(name) or len(name) > MAX_NAME:
        return (f"must be a plain name (ASCII letters, digits, _, - and ., not starting with . or -, no /, at "
                f"most {MAX_NAME} characters), got {shown(name)}")
    return None


def image_path_problem(path: str) -> str | None:
    """Why an info file's image path is unusable before any file is looked at, or None."""
    try:
        path.encode("utf-8")
    except UnicodeEncodeError:
        return f"'path' must be valid Unicode text, got {path!r} (a lone surrogate escape)"
    if _CONTROL.search(path):
        return f"'path' must not contain NUL or other control characters, got {path!r}"
    if path.startswith("/") or ".." in Path(path).parts:
        return f"'path' must be relative to images/ and stay inside it, got {path!r}"
    return None


class Outside(ValueError):
    """A path the rule refuses; ``reason`` says why (it leaves the folder, or cannot be resolved)."""

    def __init__(self, path: Path, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path, self.reason = path, reason


@dataclass(frozen=True)
class Located:
    """Where an image path leads: ``inside`` the rule (else ``reason``), ``exists`` as a regular file (None
    when refused: what is outside is not looked at), its ``size`` in bytes, and ``identity``: the file as the benchmark knows it, the last path inside
    ``images/`` on its chain of links (``a/./b.png``, ``a//b.png`` and a link to ``a/b.png`` are all
    ``a/b.png``; a link into the DVC cache is its own file, as DVC made it for a file of its own)."""

    inside: bool
    exists: bool | None
    size: int | None
    identity: str
    reason: str | None = None


class DataRoot:
    """A benchmark folder and the link roots its files may resolve into (the DVC cache)."""

    def __init__(self, root: str | Path, link_roots: Sequence[str | Path] = ()) -> None:
        self.root = Path(os.path.realpath(root))
        self.images = self.root / "images"  # why lexical: an images/ that is itself a link out is refused
        self.info = self.root / "info_files"
        self.link_roots = tuple(Path(os.path.realpath(p)) for p in link_roots)

    def _allowed(self, target: Path, base: Path) -> bool:
        return any(target == b or target.is_relative_to(b) for b in (base, *self.link_roots))

    def contain(self, path: Path, base: Path | None = None) -> Path:
        """``path`` with every link resolved, if it stays inside ``base`` (default: the root) or a link root.

        Raises:
            Outside: naming the path and where it leads; nothing has been opened.
        """
        base = self.root if base is None else base
        try:
            target = Path(os.path.realpath(path))
        except (OSError, ValueError) as err:
            raise Outside(path, f"cannot be resolved ({err})") from err
        if not self._allowed(target, base):
            raise Outside(path, f"leaves the data root: it resolves to {target}, outside {base}")
        return target

    def info_file(self, domain: str, split: str) -> Path:
        """``info_files/<domain>/<split>.json``, resolved and contained (``Outside`` otherwise)."""
        for name, problem in ((domain, domain_name_problem(domain)), (split, plain_name_problem(split))):
            if problem:
                raise Outside(self.info / str(domain) / f"{split}.json", f"{name!r} {problem}")
        return self.contain(self.info / domain / f"{split}.json", self.info)

    def locate(self, relative: str) -> Located:
        """Where ``images/<relative>`` leads (see ``Located``); looks at links and stats, opens nothing."""
        path = self.images / relative
        try:
            target = self.contain(path, self.images)
        except Outside as err:
            return Located(False, None, None, str(path), err.reason)
        try:
            info = os.stat(target)
        except (OSError, ValueError):
            info = None
        exists = info is not None and stat.S_ISREG(info.st_mode)
        size = info.st_size if exists else None
        if target.is_relative_to(self.images):
            return Located(True, exists, size, target.relative_to(self.images).as_posix())
        return Located(True, exists, size, self._last_inside(path))

    def _last_inside(self, path: Path) -> str:
        """The last path inside ``images/`` on the chain of links from ``path`` (which ends in a link root)."""
        current = Path(os.path.realpath(path.parent)) / path.name
        for _ in range(MAX_LINK_HOPS):
            if not current.is_symlink():
                break
            step = current.parent / os.readlink(current)
            step = Path(os.path.realpath(step.parent)) / step.name
            if not step.is_relative_to(self.images):
                break
            current = step
        return current.relative_to(self.images).as_posix() if current.is_relative_to(self.images) else str(current)
