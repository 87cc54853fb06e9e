"""The files root: client paths resolved inside ``<data>/files``, never outside it."""

from ._atomic import discard_file, publish_file, temporary_path, write_at
from ._io import FILE_IO_THREADS, run_file_io
from ._paths import NAME_MAX, PATH_MAX, check_client_path, resolve_client_path
from ._root import MAX_LIST_ENTRIES, Entry, FileReader, FilesRoot, FileWriter
from ._walk import DEFAULT_EXCLUDED_DIRS, compile_patterns, walk_files

__all__ = [
    "DEFAULT_EXCLUDED_DIRS",
    "FILE_IO_THREADS",
    "MAX_LIST_ENTRIES",
    "NAME_MAX",
    "PATH_MAX",
    "Entry",
    "FileReader",
    "FileWriter",
    "FilesRoot",
    "check_client_path",
    "compile_patterns",
    "discard_file",
    "publish_file",
    "resolve_client_path",
    "run_file_io",
    "temporary_path",
    "walk_files",
    "write_at",
]
