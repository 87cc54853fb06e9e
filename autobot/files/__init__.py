"""The files root: client paths resolved inside ``<data>/files``, never outside it."""

from ._io import FILE_IO_THREADS, run_file_io
from ._paths import resolve_client_path
from ._walk import DEFAULT_EXCLUDED_DIRS, compile_patterns, walk_files

__all__ = [
    "DEFAULT_EXCLUDED_DIRS",
    "FILE_IO_THREADS",
    "compile_patterns",
    "resolve_client_path",
    "run_file_io",
    "walk_files",
]
