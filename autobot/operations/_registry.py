"""Declaring operation types: a name, a timeout profile, parameters and a function.

An operation type is declared once, next to the function that does the work::

    class ScanParams(BaseModel):
        path: str

    @operation_type("security_scan", params=ScanParams)
    async def security_scan(ctx: OperationContext, params: ScanParams) -> dict[str, Any]:
        ...

A ``path`` field of the parameters is a path under the files root: the
runner resolves it when the operation is submitted, so an escape (400) or a
missing path (404) is refused before anything is queued. A model whose path
names something the operation creates says so with a class attribute
``creates_path: ClassVar[bool] = True`` (the path must then still resolve
inside the root, but need not exist).

The types of the contract take their default profile from
:data:`~autobot._operation_profile.DEFAULT_PROFILES`; any other type passes
``profile=``. The configuration's ``[operations.<type>]`` tables override a
profile field by field when the runner starts.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, ValidationError

from .._errors import ValidationFailed, echo
from .._operation_profile import DEFAULT_PROFILES, TimeoutProfile

if TYPE_CHECKING:
    from ._context import OperationContext

__all__ = [
    "NoParams",
    "OperationFunction",
    "OperationRegistry",
    "OperationType",
    "operation_type",
    "registry",
]

OperationFunction = Callable[["OperationContext", Any], Awaitable[dict[str, Any] | None]]


class NoParams(BaseModel):
    """The parameters of a type that takes none (unknown fields are still refused)."""

    model_config = ConfigDict(extra="forbid")


@dataclass(frozen=True, slots=True)
class OperationType:
    """One registered type: what the runner needs to start, resume and describe it.

    ``checkpoint_every_item``: every :meth:`OperationContext.checkpoint` call is
    saved at once, rather than at most once per ``checkpoint_interval_s`` (for
    types whose items are expensive to redo, such as a test file's run).
    """

    name: str
    function: OperationFunction
    params: type[BaseModel]
    profile: TimeoutProfile
    checkpoint_every_item: bool
    description: str

    def parse_params(self, raw: Any) -> BaseModel:
        """Validated parameters; 422 naming each bad field under ``params``."""
        try:
            return self.params.model_validate(raw if raw is not None else {})
        except ValidationError as error:
            fields = [
                {
                    "field": ".".join(("params", *(str(part) for part in item["loc"]))),
                    "message": item["msg"],
                }
                for item in error.errors()
            ]
            summary = "; ".join(f"{item['field']}: {item['message']}" for item in fields)
            raise ValidationFailed(summary, fields=fields) from None


class OperationRegistry:
    """The operation types a runner can start, by name."""

    def __init__(self) -> None:
        self._types: dict[str, OperationType] = {}

    def register(
        self,
        name: str,
        *,
        params: type[BaseModel] = NoParams,
        profile: TimeoutProfile | None = None,
        checkpoint_every_item: bool = False,
    ) -> Callable[[OperationFunction], OperationFunction]:
        """Declare ``name`` with the decorated async function; returns it unchanged."""

        def declare(function: OperationFunction) -> OperationFunction:
            if name in self._types:
                raise ValueError(f"operation type {name!r} is registered twice")
            chosen = profile or DEFAULT_PROFILES.get(name)
            if chosen is None:
                raise ValueError(f"operation type {name!r} needs a profile")
            doc = (function.__doc__ or "").strip().split("\n\n")[0]
            self._types[name] = OperationType(
                name, function, params, chosen, checkpoint_every_item, " ".join(doc.split())
            )
            return function

        return declare

    def __getitem__(self, name: Any) -> OperationType:
        """The type called ``name``; 422 listing the registered ones otherwise."""
        if isinstance(name, str) and name in self._types:
            return self._types[name]
        raise ValidationFailed(
            f"{echo(name)} is not an operation type",
            code="unknown_operation_type",
            fields=[{"field": "type", "message": "must be one of " + ", ".join(self._types)}],
        )

    def __contains__(self, name: object) -> bool:
        return name in self._types

    def __iter__(self) -> Iterator[OperationType]:
        return iter(self._types.values())


#: The registry of the built-in types (``autobot.operations.builtin`` fills it).
registry = OperationRegistry()
#: Declare a type in the built-in registry: ``@operation_type("name", params=Model)``.
operation_type = registry.register
