"""Settings: every setting asyncflow reads is declared here once, with its type, default and help.

Values come from environment variables (`ASYNCFLOW_*`) over the defaults. A bad value fails at the
first read with the setting's name and what it accepts.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import attrs


class SettingError(ValueError):
    """A setting has a value that cannot be used."""


def _parse_bool(raw: str) -> bool:
    lowered = raw.strip().lower()
    if lowered in {"1", "true", "yes", "on"}:
        return True
    if lowered in {"0", "false", "no", "off"}:
        return False
    raise ValueError("expected one of true/false/1/0/yes/no/on/off")


def _parse_nonneg_int(raw: str) -> int:
    try:
        value = int(raw)
    except ValueError:
        value = -1
    if value < 0:
        raise ValueError("expected an integer >= 0")
    return value


def _parse_delays(raw: str) -> float | list[float]:
    raw = raw.strip()
    if raw.startswith("["):
        try:
            values = json.loads(raw)
        except ValueError:
            values = None
        if not isinstance(values, list) or not all(isinstance(v, (int, float)) and v >= 0 for v in values):
            raise ValueError("expected a number >= 0 or a JSON list of numbers >= 0")
        return [float(v) for v in values]
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if value < 0:
        raise ValueError("expected a number >= 0 or a JSON list of numbers >= 0")
    return value


def _parse_level(raw: str) -> str:
    level = raw.strip().upper()
    if level not in {"DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"}:
        raise ValueError("expected one of DEBUG, INFO, WARNING, ERROR, CRITICAL")
    return level


def _parse_choice(*choices: str) -> Callable[[str], str]:
    def parse(raw: str) -> str:
        value = raw.strip().lower()
        if value not in choices:
            raise ValueError(f"expected one of {', '.join(choices)}")
        return value

    return parse


@attrs.frozen
class Setting:
    name: str
    parse: Callable[[str], Any]
    default: Any
    help: str

    def value(self) -> Any:
        raw = os.environ.get(self.name)
        if raw is None or raw == "":
            return self.default() if callable(self.default) else self.default
        try:
            return self.parse(raw)
        except (ValueError, TypeError) as exc:  # json.JSONDecodeError is a ValueError
            raise SettingError(f"Setting {self.name}={raw!r} is invalid: {exc}.") from None


SETTINGS: dict[str, Setting] = {}


def _declare(name: str, parse: Callable[[str], Any], default: Any, help: str) -> Setting:
    setting = Setting(name, parse, default, help)
    SETTINGS[name] = setting
    return setting


HOME = _declare("ASYNCFLOW_HOME", lambda raw: Path(raw).expanduser(), lambda: Path.home() / ".asyncflow",
                "Directory for asyncflow's store, results and profile.")
LOGGING_LEVEL = _declare("ASYNCFLOW_LOGGING_LEVEL", _parse_level, "INFO",
                         "Lowest level of asyncflow log lines written to the console.")
LOGGING_FORMAT = _declare("ASYNCFLOW_LOGGING_FORMAT", _parse_choice("console", "json"), "console",
                          "`console` for Prefect-style lines, `json` for one JSON object per line.")
LOGGING_LOG_PRINTS = _declare("ASYNCFLOW_LOGGING_LOG_PRINTS", _parse_bool, False,
                              "Default of `log_prints` for flows that do not set it.")
TASK_DEFAULT_RETRIES = _declare("ASYNCFLOW_TASK_DEFAULT_RETRIES", _parse_nonneg_int, 0,
                                "Retries of a task that does not set `retries`.")
TASK_DEFAULT_RETRY_DELAY_SECONDS = _declare(
    "ASYNCFLOW_TASK_DEFAULT_RETRY_DELAY_SECONDS", _parse_delays, 0.0,
    "Retry delay (a number or a JSON list) of a task that does not set `retry_delay_seconds`.")
FLOW_DEFAULT_RETRIES = _declare("ASYNCFLOW_FLOW_DEFAULT_RETRIES", _parse_nonneg_int, 0,
                                "Retries of a flow that does not set `retries`.")
FLOW_DEFAULT_RETRY_DELAY_SECONDS = _declare(
    "ASYNCFLOW_FLOW_DEFAULT_RETRY_DELAY_SECONDS", lambda raw: float(_parse_delays(raw)), 0.0,  # type: ignore[arg-type]
    "Retry delay in seconds of a flow that does not set `retry_delay_seconds`.")
THREAD_LIMIT = _declare("ASYNCFLOW_TASK_RUNNER_THREAD_LIMIT", _parse_nonneg_int, 64,
                        "How many sync task runs the default runner executes in threads at once.")
LOCAL_STORAGE_PATH = _declare(
    "ASYNCFLOW_LOCAL_STORAGE_PATH", lambda raw: Path(raw).expanduser(), lambda: HOME.value() / "storage",
    "Directory for persisted results and cache records (default: ASYNCFLOW_HOME/storage).")
RESULTS_PERSIST_BY_DEFAULT = _declare(
    "ASYNCFLOW_RESULTS_PERSIST_BY_DEFAULT", _parse_bool, False,
    "Persist every task's result (and cache with the DEFAULT policy) unless a task says otherwise.")
TASKS_REFRESH_CACHE = _declare(
    "ASYNCFLOW_TASKS_REFRESH_CACHE", _parse_bool, False,
    "Recompute and overwrite cached results for every task that does not set `refresh_cache`.")
