"""User-facing errors: one line that names the file, line or config key and says how to fix it.

The CLI prints these without a traceback (``--debug`` shows it); anything else is a bug and
keeps its traceback.
"""

from __future__ import annotations


class ShardtuneError(Exception):
    """A mistake the user can fix; ``str()`` is the whole message."""

    exit_code = 2

    def __init__(self, message: str, hint: str | None = None) -> None:
        self.message = message
        self.hint = hint
        super().__init__(message + (f" ({hint})" if hint else ""))


class ConfigError(ShardtuneError):
    """A config key with a bad value: the message starts with the dotted key."""

    def __init__(self, key: str, problem: str, hint: str | None = None) -> None:
        self.key = key
        super().__init__(f"config key '{key}': {problem}", hint)


class DataError(ShardtuneError):
    """Bad input data: the message starts with ``file:line`` where one is known."""

    def __init__(self, where: str, problem: str, hint: str | None = None) -> None:
        self.where = where
        super().__init__(f"{where}: {problem}", hint)


class ClusterError(ShardtuneError):
    """The cluster cannot run what was asked (too many workers, unreachable address)."""


def find_user_error(exc: BaseException) -> ShardtuneError | None:
    """Dig a ShardtuneError out of the wrappers Ray and Hydra put around it.

    Ray re-raises task errors as ``RayTaskError`` subclasses and Train wraps worker failures in
    ``WorkerGroupError``; the original exception survives as a cause or an attribute.
    """
    seen: set[int] = set()
    stack: list[BaseException | None] = [exc]
    while stack:
        cur = stack.pop()
        if cur is None or id(cur) in seen:
            continue
        seen.add(id(cur))
        if isinstance(cur, ShardtuneError):
            return cur
        stack.extend([cur.__cause__, cur.__context__])
        for attr in ("cause", "worker_failures", "controller_failure"):
            val = getattr(cur, attr, None)
            if isinstance(val, BaseException):
                stack.append(val)
            elif isinstance(val, dict):
                stack.extend(v for v in val.values() if isinstance(v, BaseException))
        as_instance = getattr(cur, "as_instanceof_cause", None)
        if callable(as_instance):
            try:
                stack.append(as_instance())
            except Exception:  # noqa: BLE001 - best effort unwrapping only
                pass
    return None
