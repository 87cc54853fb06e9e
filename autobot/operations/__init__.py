"""Long-running operations: typed, deadline-bound, checkpointed, resumable, adoptable."""

from .._operation_profile import DEFAULT_PROFILES, OPERATION_TYPES, PROFILE_FIELDS, TimeoutProfile
from . import builtin  # noqa: F401 - registers the built-in types
from ._context import ItemOutcome, OperationContext, OperationFailed
from ._execution import LocalRun, Outcome, execute, run_operation
from ._model import (
    FINISHED,
    RESUMABLE,
    OperationPriority,
    OperationStatus,
    operation_not_found,
    parse_priority,
)
from ._registry import (
    NoParams,
    OperationRegistry,
    OperationType,
    operation_type,
    registry,
)
from ._runner import OperationRunner, progress_channel
from .builtin._kb_population import DEFAULT_MAX_PAGES, MAX_PAGES

__all__ = [
    "DEFAULT_MAX_PAGES",
    "DEFAULT_PROFILES",
    "FINISHED",
    "MAX_PAGES",
    "OPERATION_TYPES",
    "PROFILE_FIELDS",
    "RESUMABLE",
    "ItemOutcome",
    "LocalRun",
    "NoParams",
    "OperationContext",
    "OperationFailed",
    "OperationPriority",
    "OperationRegistry",
    "OperationRunner",
    "OperationStatus",
    "OperationType",
    "Outcome",
    "TimeoutProfile",
    "execute",
    "operation_not_found",
    "operation_type",
    "parse_priority",
    "progress_channel",
    "registry",
    "run_operation",
]
