"""User-facing errors: one line that names the file, line or config key and says how to fix it.

The CLI prints these without a traceback (``--debug`` shows it); anything else is a bug and
keeps its traceback.
"""

from __future__ import annotations

import logging


class ShardtuneError(Exception):
    """A mistake the user can fix; ``str()`` is the whole message."""

    exit_code = 2

    def __init__(self, message: str, hint: str | None = None) -> None:
        self.message = message
        self.hint = hint
        super().__init__(message + (f" ({hint})" if hint else ""))

    def __reduce__(self):  # Ray ships errors between processes: rebuild from the parts
        return (ShardtuneError, (self.message, self.hint))


class ConfigError(ShardtuneError):
    """A config key with a bad value: the message starts with the dotted key."""

    def __init__(self, key: str, problem: str, hint: str | None = None) -> None:
        self.key, self.problem = key, problem
        super().__init__(f"config key '{key}': {problem}", hint)

    def __reduce__(self):
        return (ConfigError, (self.key, self.problem, self.hint))


class DataError(ShardtuneError):
    """Bad input data: the message starts with ``file:line`` where one is known."""

    def __init__(self, where: str, problem: str, hint: str | None = None) -> None:
        self.where, self.problem = where, problem
        super().__init__(f"{where}: {problem}", hint)

    def __reduce__(self):
        return (DataError, (self.where, self.problem, self.hint))


class ClusterError(ShardtuneError):
    """The cluster cannot run what was asked (too many workers, unreachable address)."""

    def __reduce__(self):
        return (ClusterError, (self.message, self.hint))


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
        if isinstance(cur, ShardtuneError) and not type(cur).__module__.startswith("ray"):
            return cur  # ours, not Ray's RayTaskError(DataError) look-alike
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


class HideUserErrors:
    """logging.Filter for Ray's console handlers: drop records that only re-print a user error.

    Ray Data and Ray Train log a worker's exception with its full traceback before re-raising
    it; for a user mistake the CLI prints one line instead. Session log files keep everything.
    """

    def filter(self, record) -> bool:  # noqa: A003 - logging API name
        text = record.getMessage()
        if record.exc_info and record.exc_info[1] is not None:
            if find_user_error(record.exc_info[1]) is not None:
                return False
            text += repr(record.exc_info[1])
        if text.startswith("Exception occurred in Ray Data or Ray Core internal code"):
            return False  # Ray's preface to re-raising a UDF error; real bugs re-raise anyway
        return "data.errors." not in text


def hide_user_error_logs() -> None:
    """Attach :class:`HideUserErrors` to the console handlers Ray installs."""
    import ray.data  # noqa: F401 - its import replaces ray.data's handlers: filter the new ones

    for name in ("ray", "ray.data", "ray.train"):
        for handler in logging.getLogger(name).handlers:
            if not any(isinstance(f, HideUserErrors) for f in handler.filters):
                handler.addFilter(HideUserErrors())
            if name == "ray.data" and isinstance(handler, logging.StreamHandler) and \
                    not isinstance(handler, logging.FileHandler):
                handler.setLevel(logging.WARNING)  # per-dataset INFO lines drown the loop's
