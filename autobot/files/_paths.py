"""Resolving client paths inside the files root: the one resolver every feature uses.

A client names a file by a ``/``-separated path relative to the files root.
:func:`resolve_client_path` turns it into an absolute path inside the root,
or refuses it. The rules, in the order they are checked:

1. **Spelling** (no file system access): ``400 path_outside_root`` for a path
   that contains a NUL byte or a backslash, starts with ``/``, or has a
   segment made only of dots and white space other than a lone ``.``
   (``..``, ``...``, ``. .``, ``" "``). Empty and ``.`` segments are no-ops,
   so ``""`` and ``"."`` name the root itself.
2. **Disguises**: the same checks hold for the path after percent-decoding it,
   once and again (up to four rounds, so ``%252e`` counts as ``.``), and for
   the Unicode NFKC form of each of those spellings, so fullwidth dots
   (``．．``), the two-dot leader (``‥``) or a fullwidth solidus cannot smuggle
   a ``..`` or a separator past a layer that normalises. Besides, any percent
   escape of ``.``, ``/``, ``\\`` or NUL (``%2e``, ``%2F``, ``%5c``, ``%00``, in
   either case, at any round; the overlong UTF-8 leads ``%c0``/``%c1``; the
   ``%u002e`` style) is refused outright, even where the decoded path would be
   harmless: no legitimate name needs one, and refusing is simpler to reason
   about than proving each harmless. Other escapes (``a%20b``) are ordinary
   characters: the file is called ``a%20b``; nothing here decodes a path.
3. **Lengths**: ``422 path_too_long`` (a :class:`ValidationFailed`) for a
   segment over ``NAME_MAX`` (255 bytes) or a path over ``PATH_MAX`` (4,096
   bytes), the client path and the resolved absolute path alike.
4. **Symbolic links**: the path is walked beneath a directory descriptor of
   the root, one component at a time, each opened with ``O_NOFOLLOW``
   relative to the directory above it (see :mod:`._beneath`). A link is read
   with ``readlinkat`` and its target walked in turn (relative to the link's
   directory, or from ``/``); each link's target must end inside the root,
   or the path is refused ``path_outside_root``: a link to a directory inside
   the root is fine, a link to ``/etc`` or a chain of links that ends outside
   is not, whatever the remaining components. Above the root the walk only
   moves along the root's own ancestors, so ``../files/docs`` comes back in
   and nothing else outside is ever looked up: the answer never says whether
   something outside exists. More than 40 links in one path is refused the
   same way (a loop).
5. **Existence**: with ``must_exist``, a missing component is ``404
   file_not_found``. Without it, the missing tail is appended as given (it
   holds no links, since it does not exist), for a caller about to create it.

The result is the real path: symbolic links replaced by their (inside)
targets. It is a string, valid at the moment of the walk: a caller that opens
it later, by name, can be led elsewhere by a link swapped in meanwhile. The
files API therefore never opens by name; it uses :class:`~autobot.files.FilesRoot`,
which opens what it walked to through the same descriptors. The operations
resolve paths here and then read only with ``O_NOFOLLOW``.
"""

from __future__ import annotations

import os
import re
import unicodedata
from pathlib import Path
from urllib.parse import unquote

from ._beneath import NAME_MAX, PATH_MAX, outside_root, too_long, walk
from ._io import run_file_io

__all__ = ["NAME_MAX", "PATH_MAX", "check_client_path", "resolve_client_path"]

# Percent-decoding rounds checked; a path still changing after them is refused.
_DECODE_ROUNDS = 4
_DISGUISED_ESCAPE = re.compile(r"%(?:2e|2f|5c|00|c0|c1|u002e|u002f|u005c|u0000)", re.IGNORECASE)


def _only_dots_and_space(name: str) -> bool:
    return all(char == "." or char.isspace() for char in name)


def _spelling_is_safe(spelling: str) -> bool:
    if "\x00" in spelling or "\\" in spelling or spelling.startswith("/"):
        return False
    for segment in spelling.split("/"):
        if segment in ("", "."):
            continue
        if _only_dots_and_space(segment):
            return False
        normal = unicodedata.normalize("NFKC", segment)
        if normal == segment:
            continue
        if any(char in normal for char in "/\\\x00") or _only_dots_and_space(normal):
            return False
    return True


def check_client_path(client_path: str) -> list[str]:
    """The segments of ``client_path`` once rules 1 to 3 hold (no file system access).

    Raises ``BadRequest`` ``path_outside_root`` or ``ValidationFailed``
    ``path_too_long``; ``[]`` for the root itself.
    """
    if not isinstance(client_path, str):
        raise outside_root(client_path)
    spelling = client_path
    for _ in range(_DECODE_ROUNDS):
        if _DISGUISED_ESCAPE.search(spelling) or not _spelling_is_safe(spelling):
            raise outside_root(client_path)
        decoded = unquote(spelling, errors="replace")
        if decoded == spelling:
            break
        spelling = decoded
    else:
        raise outside_root(client_path)
    try:
        encoded = os.fsencode(client_path)
    except UnicodeEncodeError:  # a lone surrogate: no file in the root can have that name
        raise outside_root(client_path) from None
    if len(encoded) > PATH_MAX:
        raise too_long(client_path, f"longer than {PATH_MAX} bytes")
    segments = [segment for segment in client_path.split("/") if segment not in ("", ".")]
    if any(len(os.fsencode(segment)) > NAME_MAX for segment in segments):
        raise too_long(client_path, f"a name is longer than {NAME_MAX} bytes")
    return segments


def _resolve(root: Path, segments: list[str], must_exist: bool, client_path: str) -> Path:
    with walk(root, segments, client_path, missing="error" if must_exist else "tail") as place:
        return Path(place.real_path())


async def resolve_client_path(root: Path, client_path: str, *, must_exist: bool = True) -> Path:
    """``client_path`` as an absolute real path inside ``root`` (created if missing).

    400 ``path_outside_root`` for any escape, 422 ``path_too_long``, 404
    ``file_not_found`` when ``must_exist`` and it is missing; the module
    docstring lists the rules. The file system is walked in one ``file.io`` step.
    """
    segments = check_client_path(client_path)
    return await run_file_io(_resolve, root, segments, must_exist, client_path)
