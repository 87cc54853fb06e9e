"""System prompts kept as files under ``<data_dir>/prompts/``, cached until they change.

An operator edits ``data/prompts/assistant.md`` and answers use the new text
within a second, without a restart and without touching the disk for every
answer: a lookup within ``recheck_s`` (1 s) of the last check is served from
memory (a missing template too); after that one ``stat`` decides, and the file
is read again only when its modification time, size or inode differ from the
cached copy's (an editor that saves by renaming changes the inode).
"""

from __future__ import annotations

import os
import re
import string

import trio

from .._deadlines import deadline
from .._errors import BadRequest, NotFound

__all__ = ["PromptTemplates"]

# How long a lookup trusts the last look at the file.
RECHECK_S = 1.0

# When checked, the file's version (mtime, size, inode), its text (None: missing).
_Cached = tuple[float, tuple[int, int, int], str | None]

# Parts separated by "/", none starting with "." (so neither ".." nor hidden files).
_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*(?:/[A-Za-z0-9_][A-Za-z0-9_.-]*)*")


class PromptTemplates:
    """The prompt files of one data directory: ``await templates.get("assistant")``.

    A name is a file name without its suffix (``.md`` by default), optionally
    in subdirectories (``agents/planner``). Names with ``..``, a leading ``/``
    or ``.``, or that lead outside the directory through a symlink raise
    :class:`BadRequest` (code ``invalid_prompt_name``); a missing template raises
    :class:`NotFound` (code ``prompt_not_found``). Every file operation runs
    in a thread under the ``file.io`` deadline; none runs for a lookup within
    ``recheck_s`` of the last check of that name. ``loads`` counts the reads from
    disk, so a test (or a curious operator) can see the cache at work.
    """

    def __init__(
        self,
        data_dir: str | os.PathLike[str],
        *,
        suffix: str = ".md",
        recheck_s: float = RECHECK_S,
    ) -> None:
        self.directory = trio.Path(data_dir) / "prompts"
        self.suffix = suffix
        self.recheck_s = recheck_s
        # name → its last look at the file (see _Cached).
        self._cache: dict[str, _Cached] = {}
        self.loads = 0
        self._looking: dict[str, trio.Event] = {}

    async def get(self, name: str) -> str:
        """The text of template ``name``, from the cache unless the file changed.

        One look at the file per name at a time: the answers that start while
        it runs (hundreds, when a burst of chats begins) wait for its result
        instead of each sending the same three file operations to a thread.
        """
        while True:
            cached = self._cache.get(name)
            if cached is not None and trio.current_time() - cached[0] < self.recheck_s:
                await trio.lowlevel.checkpoint()
                if cached[2] is None:
                    raise self._missing(name)
                return cached[2]
            looking = self._looking.get(name)
            if looking is None:
                break
            await looking.wait()  # bounded by the file.io deadlines of the look itself
        self._looking[name] = looking = trio.Event()
        try:
            return await self._look(name, cached)
        finally:
            del self._looking[name]
            looking.set()

    async def _look(self, name: str, cached: _Cached | None) -> str:
        path = await self._path(name)
        checked_at = trio.current_time()
        try:
            with deadline("file.io"):
                stat = await path.stat()
        except (FileNotFoundError, NotADirectoryError):
            self._cache[name] = (checked_at, (0, 0, 0), None)
            raise self._missing(name) from None
        version = (stat.st_mtime_ns, stat.st_size, stat.st_ino)
        if cached is not None and cached[1] == version and cached[2] is not None:
            self._cache[name] = (checked_at, version, cached[2])
            return cached[2]
        with deadline("file.io"):
            text = await path.read_text(encoding="utf-8")
        self.loads += 1
        self._cache[name] = (checked_at, version, text)
        return text

    def _missing(self, name: str) -> NotFound:
        path = self.directory / f"{name}{self.suffix}"
        return NotFound(
            f"no prompt template {name!r} (looked for {str(path)!r})", code="prompt_not_found"
        )

    async def render(self, name: str, **values: object) -> str:
        """Template ``name`` with ``$placeholders`` replaced by ``values``.

        Uses :class:`string.Template`'s ``safe_substitute``: a placeholder with
        no value, and a lone ``$`` (as in "costs $5"), are left as written.
        """
        return string.Template(await self.get(name)).safe_substitute(values)

    async def _path(self, name: str) -> trio.Path:
        if not _NAME.fullmatch(name):
            raise BadRequest(
                f"{name!r} is not a prompt template name (letters, digits, '_', '-', '.', "
                "parts separated by '/', none starting with '.')",
                code="invalid_prompt_name",
            )
        with deadline("file.io"):
            root = await self.directory.resolve()
            path = await (self.directory / f"{name}{self.suffix}").resolve()
        if not path.is_relative_to(root):
            raise BadRequest(
                f"prompt template {name!r} leads outside {str(root)!r}", code="invalid_prompt_name"
            )
        return path
