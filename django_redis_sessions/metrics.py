"""OpenTelemetry metrics of the single-session operations, when the API is there.

With ``opentelemetry-api`` installed (the ``otel`` extra), the layer's
``read``, ``create``, ``set``, ``update``, ``touch``, ``destroy`` and
``cycle`` (and their asyncio twins) record:

``django_redis_sessions.operations`` (counter, ``{operation}``)
    attributes ``operation`` (the names above) and ``outcome``: ``found`` or
    ``missing`` for a read; ``destroyed`` or ``missing`` for a destroy;
    ``written``, ``exists``, ``tombstoned``, ``missing`` or ``expired`` for a
    write; ``error`` when it raised, with ``error.type`` (the exception's
    class name) as well.
``django_redis_sessions.payload.size`` (histogram, ``By``)
    the bytes read or written, attribute ``operation``.

No key, id or user id is ever an attribute: each would be a new time series
per session. Without the package, ``recorded`` returns the method itself,
so there is no cost at all; with the API but no SDK configured, the API's
no-op instruments cost about half a microsecond per operation, and with the
SDK its own bookkeeping about 12 (README, "Metrics"). Instruments come
from the global meter provider, so an application that configures the SDK
after this module is imported still gets them (the API's proxy meter).
"""

from __future__ import annotations

import contextvars
import functools
import inspect
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from django_redis_sessions import __version__
from django_redis_sessions.scripts import Conflict, Outcome

Method = TypeVar("Method", bound=Callable[..., Any])

#: Bucket edges of the payload histogram, in bytes: powers of two from 64 B
#: to 1 MiB (the API's defaults are meant for milliseconds).
SIZE_BUCKETS: Sequence[float] = tuple(float(2**n) for n in range(6, 21))


class Instruments:
    def __init__(self, meter: Any) -> None:
        self.operations = meter.create_counter(
            "django_redis_sessions.operations",
            unit="{operation}",
            description="Single-session operations of the session store, by outcome.",
        )
        self.payload_size = meter.create_histogram(
            "django_redis_sessions.payload.size",
            unit="By",
            description="Size of the session payloads read and written.",
            explicit_bucket_boundaries_advisory=SIZE_BUCKETS,
        )
        # One dict per attribute set, built once: the SDK keys its series
        # by their contents, and the instruments only read them.
        self._counted: dict[tuple[str, str], dict[str, str]] = {}
        self._sized: dict[str, dict[str, str]] = {}

    def record(self, operation: str, result: Any, payload: bytes | None) -> None:
        if isinstance(result, Conflict):  # a versioned update, to be merged
            outcome = "conflict"
            size = None
        elif isinstance(result, Outcome):
            outcome = result.name.lower()
            size = len(payload) if result is Outcome.WRITTEN and payload else None
        elif isinstance(result, bool):  # destroy
            outcome = "destroyed" if result else "missing"
            size = None
        else:  # read: the payload or None
            outcome = "missing" if result is None else "found"
            size = None if result is None else len(result)
        counted = self._counted.get((operation, outcome))
        if counted is None:
            counted = {"operation": operation, "outcome": outcome}
            self._counted[operation, outcome] = counted
        self.operations.add(1, counted)
        if size is not None:
            sized = self._sized.setdefault(operation, {"operation": operation})
            self.payload_size.record(size, sized)

    def failed(self, operation: str, error: BaseException) -> None:
        attributes = {
            "operation": operation,
            "outcome": "error",
            "error.type": type(error).__name__,
        }
        self.operations.add(1, attributes)


def _instruments() -> Instruments | None:
    try:
        from opentelemetry import metrics
    except ImportError:  # the otel extra is not installed
        return None
    return Instruments(metrics.get_meter("django_redis_sessions", __version__))


instruments = _instruments()


#: True inside a recorded operation: the operations it calls itself (a cycle
#: on Cluster destroys and creates) are part of it, not counted again.
_inside: contextvars.ContextVar[bool] = contextvars.ContextVar(
    "django_redis_sessions_recording", default=False
)


def recorded(
    operation: str, method: Method, *, payload_at: int | None = None
) -> Method:
    """``method`` (of the layer), recording its outcome; itself without the API.

    ``payload_at`` is the position of the payload among the positional
    arguments after ``self``, for the size of a write.
    """
    if instruments is None:
        return method
    record = instruments.record
    failed = instruments.failed

    def payload(args: tuple[Any, ...]) -> Any:
        return None if payload_at is None else args[payload_at]

    if inspect.iscoroutinefunction(method):

        @functools.wraps(method)
        async def arecorded(self: Any, *args: Any, **kwargs: Any) -> Any:
            if _inside.get():
                return await method(self, *args, **kwargs)
            token = _inside.set(True)
            try:
                result = await method(self, *args, **kwargs)
            except Exception as error:
                failed(operation, error)
                raise
            finally:
                _inside.reset(token)
            record(operation, result, payload(args))
            return result

        return arecorded  # type: ignore[return-value]

    @functools.wraps(method)
    def recorded(self: Any, *args: Any, **kwargs: Any) -> Any:
        if _inside.get():
            return method(self, *args, **kwargs)
        token = _inside.set(True)
        try:
            result = method(self, *args, **kwargs)
        except Exception as error:
            failed(operation, error)
            raise
        finally:
            _inside.reset(token)
        record(operation, result, payload(args))
        return result

    return recorded  # type: ignore[return-value]
