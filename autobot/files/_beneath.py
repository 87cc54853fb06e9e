"""Walking a client path beneath the files root by directory descriptors, links read, not followed.

Comparing path strings cannot keep a client inside the root: between the
check and the ``open`` a directory can be replaced by a link to ``/etc``, and
the kernel, given the string again, follows it. So :func:`walk` never hands
the kernel more than one name at a time. It opens the root, then each
component relative to the descriptor of the directory above it, with
``O_NOFOLLOW``; what it holds is always a real directory inside the root, and
a name swapped for a link after that directory was opened is seen as a link
when it is opened.

A link is not refused for being a link: its target is read (``readlinkat``)
and walked in turn, component by component, from the link's directory (or
from ``/``). A ``..`` pops the stack of open directories, so it goes where the
kernel would go, not where the string says. Above the root the walk keeps
only a position, and moves only along the root's own real ancestors (a link
to ``../files/docs`` comes back in); any other name there, or a link whose
target ends anywhere but inside the root, is ``400 path_outside_root``, and
nothing outside is ever opened or even looked up, so an answer never says
what exists there. More than 40 links in one walk is refused the same way (a
loop, or a link being swapped back and forth while we look).

This is the component walk rather than ``openat2(RESOLVE_BENEATH)`` (Linux
5.6 and later): ``RESOLVE_BENEATH`` refuses every absolute link, even
one into the root, and a walk is still needed where ``openat2`` is missing
or filtered (older kernels, seccomp profiles). One code path, tested whole.
Magic links (``/proc/self/root``, ``/proc/self/fd/N``) are never followed
either: they can only be reached through ``/proc``, which is outside.

The last client component is handled by the caller when ``last="stop"``
(create, mkdir, delete act on the name itself: deleting a link deletes the
link, not its target); with ``last="follow"`` it is opened like the others
and may be a regular file.

The functions here block; they run through :func:`~autobot.files.run_file_io`.
"""

from __future__ import annotations

import errno
import os
import stat
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from .._errors import BadRequest, Conflict, NotFound, ValidationFailed, echo
from ._descriptor import Descriptor

__all__ = [
    "MAX_LINKS",
    "NAME_MAX",
    "PATH_MAX",
    "Place",
    "not_found",
    "outside_root",
    "too_long",
    "walk",
]

#: Longest file name, in bytes (Linux ``NAME_MAX``).
NAME_MAX = 255
#: Longest path, in bytes (Linux ``PATH_MAX``).
PATH_MAX = 4096
#: Links followed in one walk before it counts as a loop (Linux's own limit).
MAX_LINKS = 40

# O_NONBLOCK: opening a FIFO must not wait for a writer; it is refused right after.
_OPEN_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK | os.O_NOCTTY
# Marks, in the queue of components to walk, the end of one link's target.
_END_OF_LINK = object()

Last = Literal["follow", "stop"]
Missing = Literal["error", "tail", "create"]


def outside_root(client_path: object) -> BadRequest:
    return BadRequest(
        f"path {echo(client_path)} is outside the files root", code="path_outside_root"
    )


def too_long(client_path: str, what: str) -> ValidationFailed:
    return ValidationFailed(
        f"path {echo(client_path)}: {what}",
        code="path_too_long",
        fields=[{"field": "path", "message": what}],
    )


def not_found(client_path: str) -> NotFound:
    return NotFound(f"no file or directory {echo(client_path)}", code="file_not_found")


@dataclass
class Place:
    """Where a walk ended. Owns its descriptors: close it (or use it as a context manager).

    ``directory`` is the directory reached, ``real`` its real absolute path.
    Then, depending on the walk: ``name``, the last client component, not
    looked up (``last="stop"``; ``None`` for the root itself); ``file``, the
    regular file the path named, opened for reading, and ``file_name`` its
    real name in ``directory`` (``last="follow"``); ``tail``, the missing
    components (``missing="tail"``), as given.
    """

    directory: Descriptor
    real: str
    name: str | None = None
    file: Descriptor | None = None
    file_name: str | None = None
    tail: list[str] = field(default_factory=list)

    def real_path(self) -> str:
        """The real absolute path the walk named, missing tail included."""
        named = [part for part in (self.name, self.file_name) if part is not None]
        return os.path.join(self.real, *named, *self.tail)

    def close(self) -> None:
        self.directory.close()
        if self.file is not None:
            self.file.close()

    def __enter__(self) -> Place:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def _has_names(pending: deque[object]) -> bool:
    return any(isinstance(part, str) and part not in ("", ".") for part in pending)


def _names(pending: deque[object]) -> list[str]:
    return [part for part in pending if isinstance(part, str) and part not in ("", ".")]


class _Walk:
    """The state of one walk: open directories from the root down, or a position above it."""

    def __init__(self, root: Path, client_path: str) -> None:
        os.makedirs(root, exist_ok=True)
        self.real_root = os.path.realpath(root)
        self.client_path = client_path
        self.stack: list[tuple[int, str]] = [
            (os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC), self.real_root)
        ]
        self.above: str | None = None  # set while a link's target passes above the root
        self.links = 0

    @property
    def top(self) -> int:
        return self.stack[-1][0]

    def real(self) -> str:
        return os.path.join(self.real_root, *(name for _, name in self.stack[1:]))

    def _drop_to_root(self) -> None:
        while len(self.stack) > 1:
            os.close(self.stack.pop()[0])

    def up(self) -> None:
        if self.above is not None:
            self.above = os.path.dirname(self.above)
        elif len(self.stack) == 1:
            self.above = os.path.dirname(self.real_root)
        else:
            os.close(self.stack.pop()[0])

    def step_above(self, name: str) -> None:
        """One name while above the root: only the way back down to it is open."""
        assert self.above is not None
        candidate = os.path.join(self.above, name)
        if candidate == self.real_root:
            self.above = None
        elif self.real_root.startswith(candidate.rstrip("/") + "/"):
            self.above = candidate
        else:
            raise outside_root(self.client_path)

    def expand_link(self, name: str, pending: deque[object]) -> None:
        self.links += 1
        if self.links > MAX_LINKS:
            raise outside_root(self.client_path)
        try:
            target = os.readlink(name, dir_fd=self.top)
        except OSError as error:
            if error.errno not in (errno.EINVAL, errno.ENOENT):
                raise
            pending.appendleft(name)  # no longer a link: look at it again
            return
        pending.appendleft(_END_OF_LINK)
        pending.extendleft(reversed(target.split("/")))
        if target.startswith("/"):
            self._drop_to_root()
            self.above = "/"

    def close(self) -> None:
        for fd, _ in self.stack:
            os.close(fd)
        self.stack.clear()

    def place(self, **fields: object) -> Place:
        """Hand the directory reached to a :class:`Place`, closing the ones above it."""
        real = self.real()
        fd, _ = self.stack.pop()
        self.close()
        return Place(directory=Descriptor(fd), real=real, **fields)  # type: ignore[arg-type]


def walk(
    root: Path,
    segments: list[str],
    client_path: str,
    *,
    last: Last = "follow",
    missing: Missing = "error",
) -> Place:
    """Walk ``segments`` (checked by :func:`~autobot.files.check_client_path`) beneath ``root``.

    ``missing``: ``"error"`` makes a missing component ``404 file_not_found``;
    ``"tail"`` ends the walk there and keeps the rest in :attr:`Place.tail`;
    ``"create"`` makes the missing directories (``mkdir -p``). A regular file
    where a directory is needed counts as missing (``409 not_a_directory``
    when creating). The root is created if it does not exist. ``"tail"``
    goes with ``last="follow"`` only.
    """
    assert not (missing == "tail" and last == "stop")
    state = _Walk(root, client_path)
    pending: deque[object] = deque(segments[:-1] if last == "stop" else segments)
    try:
        while pending:
            name = pending.popleft()
            if name is _END_OF_LINK:
                if state.above is not None:
                    raise outside_root(client_path)
                continue
            assert isinstance(name, str)
            if name in ("", "."):
                continue
            if name == "..":  # only ever from a link's target: the client's are refused
                state.up()
                continue
            if state.above is not None:
                state.step_above(name)
                continue
            try:
                fd = os.open(name, _OPEN_FLAGS, dir_fd=state.top)
            except FileNotFoundError:
                if missing == "create":
                    try:
                        os.mkdir(name, 0o755, dir_fd=state.top)
                    except FileExistsError:
                        pass  # made meanwhile, or a dangling link: look again
                    state.links += 1  # bounds the retries of a name that keeps changing
                    if state.links > MAX_LINKS:
                        raise outside_root(client_path) from None
                    pending.appendleft(name)
                    continue
                if missing == "tail":
                    return _tail(state, [name, *_names(pending)])
                raise not_found(client_path) from None
            except OSError as error:
                if error.errno == errno.ELOOP:  # O_NOFOLLOW met a link
                    state.expand_link(name, pending)
                    continue
                if error.errno == errno.ENAMETOOLONG:
                    raise too_long(client_path, "the resolved path is too long") from None
                if error.errno == errno.ENXIO:  # a socket
                    raise _not_regular(client_path) from None
                raise
            try:
                mode = os.fstat(fd).st_mode
            except BaseException:
                os.close(fd)
                raise
            if stat.S_ISDIR(mode):
                state.stack.append((fd, name))
                continue
            if stat.S_ISREG(mode) and last == "follow" and not _has_names(pending):
                place = state.place(file=Descriptor(fd), file_name=name)
                return _checked(place, client_path)
            os.close(fd)
            if not stat.S_ISREG(mode):
                raise _not_regular(client_path)
            if missing == "tail":
                return _tail(state, [name, *_names(pending)])
            if missing == "create":
                raise Conflict(
                    f"{echo(client_path)}: a file stands where a directory is needed",
                    code="not_a_directory",
                )
            raise not_found(client_path)
        if state.above is not None:
            raise outside_root(client_path)
        name_kept = segments[-1] if last == "stop" and segments else None
        return _checked(state.place(name=name_kept), client_path)
    except BaseException:
        state.close()
        raise


def _tail(state: _Walk, rest: list[str]) -> Place:
    if ".." in rest:  # a missing directory cannot be climbed out of
        raise outside_root(state.client_path)
    return _checked(state.place(tail=rest), state.client_path)


def _checked(place: Place, client_path: str) -> Place:
    if len(os.fsencode(place.real_path())) > PATH_MAX:
        place.close()
        raise too_long(client_path, f"the resolved path is longer than {PATH_MAX} bytes")
    return place


def _not_regular(client_path: str) -> Conflict:
    return Conflict(
        f"{echo(client_path)} is neither a regular file nor a directory",
        code="not_a_regular_file",
    )
