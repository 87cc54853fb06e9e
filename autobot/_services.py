"""The service container: everything request handlers use, with one lifetime.

:meth:`Services.run` is started by the app's lifespan with ``nursery.start()``:
it opens the services in order under the ``service.start`` deadline, reports
ready, runs background work in a nursery of its own until :meth:`Services.stop`
is called, then cancels that work and closes the services in reverse order under
``service.stop`` (shielded, so a cancelled lifespan still closes them). Nothing
here knows about HTTP; the API layer reaches services through the app.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from contextlib import AsyncExitStack

import httpx
import trio

from ._config import Settings
from ._deadlines import deadline
from ._errors import DeadlineExceeded
from ._health import DataDirCheck, HealthCheck, LLMReachableCheck
from ._logging import log_fields
from ._metrics import Metrics

__all__ = ["Services"]

log = logging.getLogger("autobot.services")


class Services:
    """Owns the app's long-lived resources and background tasks."""

    def __init__(
        self, settings: Settings, *, extra_health_checks: Sequence[HealthCheck] = ()
    ) -> None:
        self.settings = settings
        self.metrics = Metrics()
        self.health_checks: list[HealthCheck] = []
        self._extra_health_checks = list(extra_health_checks)
        self._stop_requested = trio.Event()
        self.stopped = trio.Event()

    async def _open(self, stack: AsyncExitStack) -> None:
        settings = self.settings
        try:
            await trio.Path(settings.data_dir).mkdir(parents=True, exist_ok=True)
        except OSError as error:
            # Still start: health then answers "down" and says why.
            log.error("data dir unusable", extra=log_fields(error=str(error)))
        self.health_checks.append(DataDirCheck(settings.data_dir))

        headers = (
            {"Authorization": f"Bearer {settings.llm_api_key}"} if settings.llm_api_key else {}
        )
        # Deadlines are cancel scopes around each call, so httpx's own timeouts are off.
        llm_http = await stack.enter_async_context(
            httpx.AsyncClient(timeout=httpx.Timeout(None), headers=headers)
        )
        self.health_checks.append(
            LLMReachableCheck(settings.llm_provider, settings.llm_url, llm_http)
        )
        self.health_checks.extend(self._extra_health_checks)

    async def run(
        self, *, task_status: trio.TaskStatus[Services] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Open the services, report ready, and keep them until :meth:`stop`."""
        stack = AsyncExitStack()
        try:
            with deadline("service.start"):
                await self._open(stack)
            async with trio.open_nursery() as background:
                self.background = background
                task_status.started(self)
                await self._stop_requested.wait()
                background.cancel_scope.cancel()
        finally:
            with trio.CancelScope(shield=True):
                try:
                    with deadline("service.stop"):
                        await stack.aclose()
                except DeadlineExceeded as error:
                    log.error("services did not close in time", extra=log_fields(error=str(error)))
            self.stopped.set()

    def stop(self) -> None:
        """Ask :meth:`run` to stop its background work and close the services."""
        self._stop_requested.set()
