"""A sweep's console: one line per trial event (started, evaluated at a rung it survived or
not, finished, failed), trials named by number and swept values."""

from __future__ import annotations

from typing import Any

from data.errors import find_user_error


def trial_number(trial_id: str | None) -> str:
    """``46f14_00002`` → ``t3``: Tune numbers a sweep's trials from 0 in its ids."""
    suffix = (trial_id or "").rpartition("_")[2]
    return f"t{int(suffix) + 1}" if suffix.isdigit() else str(trial_id)


def _values(config: dict[str, Any], keys: list[str]) -> str:
    def short(value: Any) -> str:
        return f"{value:.3g}" if isinstance(value, float) else str(value)

    return " ".join(f"{k}={short(config.get(k))}" for k in keys)


def _error_line(trial: Any) -> str:
    """A user mistake's one line, else the last line of the trial's error."""
    try:
        error = trial.get_pickled_error() or trial.get_error()
    except Exception:  # noqa: BLE001 - the line is informative only
        error = None
    if error is None:
        return "see the sweep's log"
    user = find_user_error(error)
    text = str(user) if user is not None else str(error).strip()
    return " ".join(text.splitlines()[-1:] if user is None else text.split())[:200]


def trial_events(keys: list[str], metric: str) -> Any:
    """A Tune callback that prints each trial's start and end on one line."""
    from ray.tune import Callback

    class TrialEvents(Callback):
        def __init__(self) -> None:
            self.last: dict[str, dict[str, Any]] = {}

        def on_trial_start(self, iteration, trials, trial, **info) -> None:
            print(f"{trial_number(trial.trial_id):>4} started    {_values(trial.config, keys)}",
                  flush=True)

        def on_trial_result(self, iteration, trials, trial, result, **info) -> None:
            self.last[trial.trial_id] = result

        def on_trial_complete(self, iteration, trials, trial, **info) -> None:
            result = self.last.get(trial.trial_id, {})
            value = result.get(metric)
            shown = f"{metric} {value:.4f}" if isinstance(value, float) else f"{metric} —"
            how = "completed" if "params_total" in result else "stopped early"
            print(f"{trial_number(trial.trial_id):>4} {how:<14}{shown} at step "
                  f"{result.get('step', '?')}", flush=True)

        def on_trial_error(self, iteration, trials, trial, **info) -> None:
            print(f"{trial_number(trial.trial_id):>4} failed       {_error_line(trial)}",
                  flush=True)

    return TrialEvents()
