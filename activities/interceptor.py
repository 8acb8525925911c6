"""Log context for every activity attempt.

While an activity runs, `tenant_id`, `workflow_id`, `run_id`, `activity`, `attempt` and
(for per-service calls) `service` are bound to structlog's context, so every line logged
during the attempt (ours, httpx's, psycopg's) carries them. Each attempt ends with one line
giving its `outcome` and `duration_ms`.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from typing import Any

import structlog
from temporalio import activity
from temporalio.exceptions import ApplicationError
from temporalio.worker import (
    ActivityInboundInterceptor,
    ExecuteActivityInput,
    Interceptor,
)

from tenancy.failures import FailureType

_log = structlog.stdlib.get_logger("platform.activity")


def context_fields(info: activity.Info, args: Sequence[Any]) -> dict[str, Any]:
    """What to bind for one attempt: Temporal's ids, and the tenant and service named by
    the activity's input model (`tenant_id`, or `spec.id` before the row exists)."""
    fields: dict[str, Any] = {
        "workflow_id": info.workflow_id,
        "run_id": info.workflow_run_id,
        "activity": info.activity_type,
        "attempt": info.attempt,
    }
    if info.is_local:
        # Run inside the workflow task (a local activity), not taken from a task queue.
        fields["local"] = True
    request = args[0] if args else None
    tenant_id = getattr(request, "tenant_id", None) or getattr(
        getattr(request, "spec", None), "id", None
    )
    if tenant_id is not None:
        fields["tenant_id"] = tenant_id
    service = getattr(request, "service", None)
    if service is not None:
        fields["service"] = service
    return fields


def _will_retry(info: activity.Info, error: BaseException) -> bool:
    if isinstance(error, ApplicationError) and error.non_retryable:
        return False
    if info.is_local:
        # A local attempt's retryable failure hands the call to the regular activity.
        return True
    policy = info.retry_policy
    if policy is None:
        return True
    if isinstance(error, ApplicationError) and error.type in (
        policy.non_retryable_error_types or ()
    ):
        return False
    return policy.maximum_attempts <= 0 or info.attempt < policy.maximum_attempts


def _error_type(error: Exception) -> str:
    if isinstance(error, ApplicationError) and error.type:
        return str(error.type)
    return type(error).__name__


class _ActivityContext(ActivityInboundInterceptor):
    async def execute_activity(self, input: ExecuteActivityInput) -> Any:
        info = activity.info()
        started = time.monotonic()

        def elapsed_ms() -> int:
            return round((time.monotonic() - started) * 1000)

        with structlog.contextvars.bound_contextvars(**context_fields(info, input.args)):
            try:
                result = await super().execute_activity(input)
            except asyncio.CancelledError:
                _log.info("activity cancelled", outcome="cancelled", duration_ms=elapsed_ms())
                raise
            except ApplicationError as exc:
                if exc.type != FailureType.LOCAL_DECLINED:
                    self._log_failure(info, exc, elapsed_ms())
                else:
                    # Not a failure: the call goes to its queue instead (FailureType says why).
                    _log.info("activity declined locally", outcome="declined", reason=str(exc))
                raise
            except Exception as exc:
                self._log_failure(info, exc, elapsed_ms())
                raise
            _log.info("activity completed", outcome="completed", duration_ms=elapsed_ms())
            return result

    @staticmethod
    def _log_failure(info: activity.Info, exc: Exception, elapsed_ms: int) -> None:
        _log.warning(
            "activity failed",
            outcome="retrying" if _will_retry(info, exc) else "failed",
            duration_ms=elapsed_ms,
            error_type=_error_type(exc),
            error=str(exc),
        )


class ActivityContextInterceptor(Interceptor):
    """Worker interceptor: binds each activity attempt's log context and logs its end."""

    def intercept_activity(self, next: ActivityInboundInterceptor) -> ActivityInboundInterceptor:
        """Wrap activity execution."""
        return _ActivityContext(next)
