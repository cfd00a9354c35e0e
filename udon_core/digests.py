"""File digests: what checkpoints and saved models are verified against before anything reads them.

A digest file is in ``sha256sum`` format, one ``<64 hex>  <file name>`` line per file, so ``sha256sum -c``
checks it too. It is read strictly: a line that does not parse, a file it does not name, or a file it names
twice make it unusable, so no single damaged byte can turn the check off (a damaged name or digest is a
mismatch, never a missing entry that is skipped).
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Callable, Sequence
from pathlib import Path

from udon_core.errors import CheckpointError

_LINE = re.compile(r"([0-9a-f]{64}) [ *](\S+)")


def file_sha256(path: Path) -> str:
    """Hex SHA-256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def write_atomic(path: Path, writer: Callable[[Path], object]) -> None:
    """``writer(tmp)`` (a sibling temporary name), flushed to disk, then renamed to ``path``: a reader sees
    the old file or the new one, never a part, and a crash never leaves a renamed file with unwritten data."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    writer(tmp)
    with open(tmp, "rb") as fh:
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def write_digest_file(digest_file: Path, files: Sequence[Path]) -> None:
    """Write the SHA-256 of each of ``files`` (all in ``digest_file``'s folder) atomically, flushed to disk."""
    text = "".join(f"{file_sha256(f)}  {Path(f).name}\n" for f in files)
    write_atomic(digest_file, lambda tmp: tmp.write_text(text))


def read_digest_file(digest_file: Path, names: Sequence[str]) -> dict[str, str]:
    """``{name: hex digest}`` for exactly ``names``; CheckpointError for any other content."""
    try:
        text = Path(digest_file).read_bytes().decode("ascii")
    except UnicodeDecodeError as err:
        raise CheckpointError(f"{digest_file}: damaged (not a sha256sum list: {err.reason})") from err
    found: dict[str, str] = {}
    # why split("\n"): str.splitlines() also splits at \v, \f and \x1c-\x1e, so a flipped newline would pass.
    for number, line in enumerate(text[:-1].split("\n") if text.endswith("\n") else [text], 1):
        m = _LINE.fullmatch(line)
        if m is None or m.group(2) in found:
            raise CheckpointError(f"{digest_file}: damaged (line {number} is not '<sha256>  <file>', or repeats "
                                  "a file)")
        found[m.group(2)] = m.group(1)
    if sorted(found) != sorted(names):
        raise CheckpointError(f"{digest_file}: damaged (it lists {sorted(found)}, expected {sorted(names)})")
    return found


def verify_digest_file(digest_file: Path, names: Sequence[str]) -> None:
    """Raise CheckpointError unless each of ``names`` (beside ``digest_file``) matches its listed SHA-256.

    ``names`` are checked in order and the first mismatch is reported, so put small files first: a damaged
    description is found before the weights are hashed.
    """
    digest_file = Path(digest_file)
    expected = read_digest_file(digest_file, names)
    for name in names:
        path = digest_file.with_name(name)
        if not path.is_file():
            raise CheckpointError(f"{path}: not found (listed in {digest_file.name})")
        if (actual := file_sha256(path)) != expected[name]:
            raise CheckpointError(f"{path}: content does not match its SHA-256 in {digest_file.name} (expected "
                                  f"{expected[name][:12]}..., found {actual[:12]}...): the file is damaged or was "
                                  "replaced")
