"""Settings: every setting asyncflow reads is declared here once, with its type, default and help.

A setting's value comes from, highest first:

1. the environment variable of the same name (`ASYNCFLOW_LOGGING_LEVEL=DEBUG`);
2. the profile file, `ASYNCFLOW_HOME/profile.env`, which `asyncflow config set` writes: one
   `NAME=VALUE` per line, `#` starts a comment line, the value is everything after the first `=`
   (surrounding whitespace removed, no quoting);
3. the declared default.

A bad value fails at its first read with the setting's name, where the value came from and what the
setting accepts; the first read of any setting checks every setting, so a bad value fails at start
(when the first task or flow is defined) rather than in the middle of a run. Reading is cheap: one
environment lookup, and the profile file is re-read only when it changes (checked at most once a second).
"""

from __future__ import annotations

import json
import math
import os
import re
import sys
import threading
import time
import warnings
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any, NamedTuple

from ._values import Frozen, ValueEq

if TYPE_CHECKING:  # pathlib (with urllib.parse and ipaddress) is imported by the first setting read
    from pathlib import Path

PROFILE_FILE_NAME = "profile.env"


class SettingError(ValueError):
    """A setting has a value that cannot be used, or a setting name is unknown."""


class ProfileFileError(SettingError):
    """The profile file cannot be read or has a line that is not NAME=VALUE."""


# -- parsers: each takes the raw string and returns the value, or raises ValueError("expected ...") --
def _parse_bool(raw: str) -> bool:
    lowered = raw.strip().lower()
    if lowered in {"1", "true", "yes", "on"}:
        return True
    if lowered in {"0", "false", "no", "off"}:
        return False
    raise ValueError("expected one of true/false/1/0/yes/no/on/off")


def _parse_int(minimum: int) -> Callable[[str], int]:
    def parse(raw: str) -> int:
        try:
            value = int(raw.strip())
        except ValueError:
            value = minimum - 1
        if value < minimum:
            raise ValueError(f"expected an integer >= {minimum}")
        return value

    return parse


ONE_DAY = 86_400  # the longest wait a setting can ask for: retry delays, leases, flush timeouts
MAX_DELAYS = 50  # as many retry delays as a task can take (retry_delay_seconds=[...])


def _parse_seconds(raw: str) -> float:
    try:
        value = float(raw.strip())
    except ValueError:
        value = -1.0
    if not 0 <= value <= ONE_DAY:  # also refuses nan and inf
        raise ValueError(f"expected a number of seconds from 0 to {ONE_DAY} (one day)")
    return value


_DELAYS = (f"expected a number >= 0 or a JSON list of numbers >= 0 (at most {MAX_DELAYS} of them), each at "
           f"most {ONE_DAY} (one day)")


def _is_delay(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and 0 <= value <= ONE_DAY


def _parse_delays(raw: str) -> float | list[float]:
    raw = raw.strip()
    if raw.startswith("["):
        try:
            values = json.loads(raw)  # NaN and Infinity parse, and are refused below
        except (ValueError, RecursionError):
            values = None
        if not isinstance(values, list) or len(values) > MAX_DELAYS or not all(_is_delay(v) for v in values):
            raise ValueError(_DELAYS)
        return [float(v) for v in values]
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not _is_delay(value):
        raise ValueError(_DELAYS)
    return value


def _parse_flow_delay(raw: str) -> float:
    value = _parse_delays(raw)
    if isinstance(value, list):
        raise ValueError(f"expected a number from 0 to {ONE_DAY} (one day); flows take one delay, not a list")
    return value


def _parse_level(raw: str) -> str:
    level = raw.strip().upper()
    if level not in {"DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"}:
        raise ValueError("expected one of DEBUG, INFO, WARNING, ERROR, CRITICAL")
    return level


def _parse_words(raw: str) -> tuple[str, ...]:
    words = tuple(word.strip() for word in raw.split(","))
    if any(not word.isidentifier() for word in words if word):
        raise ValueError("expected a comma-separated list of words (letters, digits, underscores)")
    return tuple(word for word in words if word)


def _parse_logger_names(raw: str) -> tuple[str, ...]:
    names = tuple(name.strip() for name in raw.split(",") if name.strip())
    for name in names:
        if any(c.isspace() for c in name) or name.startswith(".") or name.endswith("."):
            raise ValueError(f"{name!r} is not a logger name; expected a comma-separated list of logger names "
                             "such as httpx,botocore.client")
    return names


def _parse_choice(*choices: str) -> Callable[[str], str]:
    def parse(raw: str) -> str:
        value = raw.strip().lower()
        if value not in choices:
            raise ValueError(f"expected one of {', '.join(choices)}")
        return value

    return parse


def _parse_broker_url(raw: str) -> str:
    url = raw.strip()
    if url.lower().startswith(("postgresql://", "postgres://")):
        from ._store.postgres_base import check_url

        return check_url(url)
    if not url.startswith(("sqlite:///", "redis://", "rediss://", "unix://")):
        raise ValueError("expected sqlite:////absolute/path/to/file.db, redis://host:port/db or "
                         "postgresql://user:password@host:5432/database")
    if url.startswith("sqlite:///"):
        from pathlib import Path

        file = url[len("sqlite:///"):]
        if not Path(file).is_absolute():
            raise ValueError("expected sqlite:////absolute/path/to/file.db (sqlite:/// then an absolute "
                             f"path); {file!r} is relative, and would mean another file for each current "
                             "directory")
        try:
            path = _parse_directory(str(Path(file).parent)) / Path(file).name
        except ValueError as exc:
            raise ValueError(f"{exc} (the directory of the SQLite broker's file)") from None
        if path.is_dir():
            raise ValueError(f"expected the path of a database file; {str(path)!r} is a directory")
    return url


def _parse_lease(raw: str) -> float:
    try:
        value = float(raw.strip())
    except ValueError:
        value = -1.0
    if not 1 <= value <= ONE_DAY:  # a lease shorter than a second would be taken back before it is renewed
        raise ValueError(f"expected a number of seconds from 1 to {ONE_DAY} (one day)")
    return value


def _parse_result_storage(raw: str) -> str:
    value = raw.strip()
    if value.lower() in ("auto", "local"):
        return value.lower()
    if value.lower().startswith(("postgresql://", "postgres://")):
        from ._store.postgres_base import check_url

        return check_url(value)
    raise ValueError("expected one of auto, local, or a PostgreSQL URL (postgresql://user:password@host:5432/database)")


def _parse_store(raw: str) -> str:
    """`sqlite`, `memory` (any case), or a PostgreSQL URL (kept as written: it may hold a password)."""
    value = raw.strip()
    if value.lower() in ("sqlite", "memory"):
        return value.lower()
    if value.lower().startswith(("postgresql://", "postgres://")):
        from ._store.postgres_base import check_url

        return check_url(value)
    raise ValueError("expected one of sqlite, memory, or a PostgreSQL URL "
                     "(postgresql://user:password@host:5432/database)")


_DURATION = re.compile(r"([0-9]+(?:\.[0-9]*)?|\.[0-9]+)\s*([smhd]?)", re.ASCII)
_DURATION_UNITS = {"": 1.0, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
DURATION_FORMS = "a duration such as 30d, 12h, 90m, 45s or a number of seconds"


def parse_duration(raw: str) -> float:
    """`30d`, `12h`, `90m`, `45s` or a plain number of seconds (`3600`, `1.5`), in any case and with
    spaces around: the number of seconds, a finite float >= 0. Raises ValueError("expected ...")."""
    match = _DURATION.fullmatch(raw.strip().lower()) if isinstance(raw, str) else None
    value = float(match.group(1)) * _DURATION_UNITS[match.group(2)] if match else -1.0
    if not 0 <= value < math.inf:  # no sign, exponent, nan or inf; a number too big for a float
        raise ValueError(f"expected {DURATION_FORMS}")
    return value


def _parse_retention_seconds(raw: str) -> float:
    """A duration (no upper bound: it says how long to keep things), 0/off = 0 (for ever)."""
    return _parse_retention(raw) or 0.0


def _parse_retention(raw: str) -> float | None:
    """A duration, or `0`/`off` (None: keep runs for ever)."""
    if raw.strip().lower() in ("off", "never", "forever"):
        return None
    try:
        value = parse_duration(raw)
    except ValueError:
        raise ValueError(f"expected {DURATION_FORMS}, or 0/off to keep runs for ever") from None
    return value or None


_NAME_MAX = 255  # bytes in one file name, and in a whole path (PATH_MAX less the terminating NUL), on Linux
_PATH_MAX = 4095


def expand_home(raw: str | os.PathLike[str]) -> Path:
    """`raw` with a leading `~` or `~user` expanded; a user this machine does not know is a ValueError
    (pathlib raises RuntimeError)."""
    from pathlib import Path

    try:
        return Path(raw).expanduser()
    except RuntimeError:
        raise ValueError(f"expected a path; {os.fspath(raw)!r} starts with ~ but names no user of this "
                         f"machine") from None


def _check_path(raw: str) -> Path:
    """A path to a directory asyncflow creates: absolute (a relative one would mean another directory for
    each current directory), no NUL, within the system's length limits."""
    raw = raw.strip()
    if "\x00" in raw:
        raise ValueError("expected an absolute directory path; it contains a NUL character")
    path = expand_home(raw)
    if not path.is_absolute():
        from pathlib import Path

        raise ValueError("expected an absolute directory path (or one starting with ~); a relative path "
                         "would mean another directory for each current directory. Use "
                         f"{str(Path.cwd() / raw)!r} for this one")
    encoded = os.fsencode(str(path))
    if len(encoded) > _PATH_MAX:
        raise ValueError(f"expected a directory path; this one is too long ({len(encoded)} bytes; at most "
                         f"{_PATH_MAX})")
    longest = max((len(os.fsencode(part)) for part in path.parts), default=0)
    if longest > _NAME_MAX:
        raise ValueError(f"expected a directory path; a name in it is too long ({longest} bytes; at most "
                         f"{_NAME_MAX} per name)")
    return path


def _parse_path(raw: str) -> Path:
    return _check_path(raw)


def _parse_directory(raw: str) -> Path:
    """`_check_path`, and nothing on the way is a file: a path under /dev/null would fail at the first
    write, deep in a run."""
    path = _check_path(raw)
    for ancestor in (path, *path.parents):
        try:
            is_dir = ancestor.is_dir()
            exists = is_dir or ancestor.exists()
        except OSError:  # cannot look (permissions): the write will say why
            break
        if exists:
            if not is_dir:
                raise ValueError(f"expected a directory path; {str(ancestor)!r} exists and is not a "
                                 f"directory")
            break
    return path


# -- reading the environment ------------------------------------------------------------------------
# `os.environ.get` encodes the name and decodes the value on every call (three reads per setting read:
# ~1 µs each on a loaded machine, ~4 µs of every root flow run). On POSIX the environment's own dict is
# read with the name encoded once: the same values, changes made through `os.environ` (or
# `monkeypatch.setenv`) seen at once, as `os.environ.get` sees them.
_ENVIRON = os.environ
_ENV_DATA: dict[bytes, bytes] | None = getattr(os.environ, "_data", None) if os.name == "posix" else None
_ENV_KEYS: dict[str, bytes] = {}
_FS_ENCODING = sys.getfilesystemencoding()


def _env_data() -> dict[bytes, bytes] | None:
    """The environment's own dict, when it can be read directly (else `os.environ.get` must be used:
    not POSIX, or `os.environ` replaced)."""
    data = _ENV_DATA
    return data if data is not None and os.environ is _ENVIRON and type(data) is dict else None


def _env_key(name: str) -> bytes:
    key = _ENV_KEYS.get(name)
    if key is None:
        key = _ENV_KEYS[name] = name.encode(_FS_ENCODING, "surrogateescape")
    return key


def _getenv(name: str) -> str | None:
    """`os.environ.get(name)`, cheaper."""
    data = _env_data()
    if data is None:
        return os.environ.get(name)
    raw = data.get(_env_key(name))
    return None if raw is None else raw.decode(_FS_ENCODING, "surrogateescape")


def env_snapshot(names: tuple[str, ...]) -> tuple[Any, ...]:
    """The current values of these variables, as a key for a cache of what they decide (raw bytes on
    POSIX, not decoded: ~0.3 µs for five names where `os.environ.get` takes ~2 µs each)."""
    data = _env_data()
    if data is None:
        return tuple(os.environ.get(name) for name in names)
    return tuple(map(data.get, map(_env_key, names)))


# -- declarations ----------------------------------------------------------------------------------
class Setting(Frozen, ValueEq):
    """One declared setting (frozen, compared by value)."""

    __slots__ = ("name", "parse", "default", "help", "accepts", "in_profile")
    name: str
    parse: Callable[[str], Any]
    default: Any  # a value, or a function of nothing that computes it (defaults that depend on HOME)
    help: str
    accepts: str  # what a value may be, for `config view --show-defaults` and the docs
    in_profile: bool  # False for ASYNCFLOW_HOME: the profile lives under it

    def __init__(self, name: str, parse: Callable[[str], Any], default: Any, help: str, accepts: str,
                 in_profile: bool = True) -> None:
        self._set_fields(name, parse, default, help, accepts, in_profile)

    def value(self) -> Any:
        """The current value: environment, else profile, else default. Raises SettingError (the first
        read in a process checks every setting, so that a bad value anywhere fails at start)."""
        if not _checked:
            check_all()
        return self.resolve()

    def resolve(self) -> Any:
        """The current value, checking this setting only."""
        raw = _getenv(self.name)
        if raw:
            return self._parse(raw, "environment")
        if self.in_profile:
            raw = _profile().values.get(self.name)
            if raw:
                return self._parse(raw, "profile")
        return self.default_value()

    def default_value(self) -> Any:
        return self.default() if callable(self.default) else self.default

    def source(self) -> str:
        """Where the current value comes from: "environment", "profile" or "default"."""
        if os.environ.get(self.name):
            return "environment"
        if self.in_profile and _profile().values.get(self.name):
            return "profile"
        return "default"

    def _parse(self, raw: str, source: str) -> Any:
        key = (self.name, raw)
        value = _parsed.get(key, _MISSING)
        if value is not _MISSING:
            return list(value) if type(value) is list else value
        try:
            value = self.parse(raw)
            if len(_parsed) < 1000:
                _parsed[key] = value
            return list(value) if type(value) is list else value
        except (ValueError, TypeError) as exc:  # json.JSONDecodeError is a ValueError
            where = "" if source == "environment" else (
                f" (from the profile {_profile().path}; change it with `asyncflow config set {self.name}=...` "
                f"or remove it with `asyncflow config unset {self.name}`)")
            raise SettingError(f"Setting {self.name}={hide_password(raw)!r} is invalid: {exc}.{where}") from None


_PASSWORD_IN_URL = re.compile(r"(://[^:/@?#\s]*:)[^@/\s]*@")
_PASSWORD_PARAMETER = re.compile(r"(?i)(password=)[^&\s]*")


def hide_password(text: Any) -> Any:
    """A URL setting's value as shown (config view, errors): its password replaced by ***."""
    if not isinstance(text, str) or "://" not in text:
        return text
    return _PASSWORD_PARAMETER.sub(r"\1***", _PASSWORD_IN_URL.sub(r"\1***@", text))


SETTINGS: dict[str, Setting] = {}
_parsed: dict[tuple[str, str], Any] = {}  # (name, raw) -> value: a value is parsed once
_MISSING = object()


def _declare(name: str, parse: Callable[[str], Any], default: Any, help: str, accepts: str,
             in_profile: bool = True) -> Setting:
    if name in SETTINGS:
        raise RuntimeError(f"setting {name} is declared twice")
    setting = Setting(name, parse, default, help, accepts, in_profile)
    SETTINGS[name] = setting
    return setting


_default_home: tuple[str | None, Path] | None = None


def _home_default() -> Path:
    global _default_home
    user_home = os.environ.get("HOME")
    cached = _default_home
    if cached is None or cached[0] != user_home:
        from pathlib import Path

        cached = _default_home = (user_home, Path.home() / ".asyncflow")
    return cached[1]


HOME = _declare(
    "ASYNCFLOW_HOME", _parse_path, _home_default,
    "Directory for asyncflow's run store (asyncflow.db), results and profile file. Environment only: the "
    "profile file lives in it.", "an absolute directory path (~ allowed)", in_profile=False)
STORE = _declare(
    "ASYNCFLOW_STORE", _parse_store, "sqlite",
    "Where runs, states and logs are recorded: `sqlite` (ASYNCFLOW_HOME/asyncflow.db, shared by every "
    "process with the same home), `memory` (this process only, nothing on disk), or a PostgreSQL URL "
    "(`postgresql://user:password@host:5432/database`: one store for every machine; needs asyncflow-anyio[postgres]).",
    "sqlite, memory or postgresql://user:password@host:5432/database")
STORE_PARAMETERS = _declare(
    "ASYNCFLOW_STORE_PARAMETERS", _parse_choice("all", "none"), "all",
    "What the run store keeps of runs' parameters: `all` (summarised: plain values, cut long strings, type names "
    "for the rest) or `none` (no parameters on disk at all).", "all or none")
STORE_REDACT = _declare(
    "ASYNCFLOW_STORE_REDACT", _parse_words, ("password", "passwd", "secret", "token", "api_key", "apikey",
                                             "credential", "private_key"),
    "Parameters whose name contains one of these words (any case) are stored as `<redacted>`; a comma-separated "
    "list, empty for none.", "a comma-separated list of words")
STORE_QUEUE_SIZE = _declare(
    "ASYNCFLOW_STORE_QUEUE_SIZE", _parse_int(1), 100_000,
    "Records (runs, states, log lines) that may wait for the SQLite writer. When it is full, recording "
    "waits for room (backpressure) while the writer makes progress; nothing is ever dropped.", "an integer >= 1")
STORE_WRITER = _declare(
    "ASYNCFLOW_STORE_WRITER", _parse_choice("auto", "thread", "process"), "auto",
    "Where the SQLite store's writer folds and writes its batches: `thread` (a thread of this process), "
    "`process` (a writer process of its own, fed through a pipe, so the writing does not take this process's "
    "GIL), or `auto` (a thread at first, a writer process once this process has recorded a few thousand "
    "records, if a CPU is idle). The PostgreSQL store always writes in a thread.", "auto, thread or process")
STORE_FLUSH_TIMEOUT_SECONDS = _declare(
    "ASYNCFLOW_STORE_FLUSH_TIMEOUT_SECONDS", _parse_seconds, 10.0,
    "How long a flush (the end of an outermost flow run, process exit) waits for the database, e.g. while "
    "other processes hold it, before it gives up with a warning (what is not written stays queued).",
    "a number of seconds from 0 to 86400")
STORE_RETENTION = _declare(
    "ASYNCFLOW_STORE_RETENTION", _parse_retention, 30 * 86400.0,
    "How long finished runs (with their states and logs) stay in the store: older ones are pruned "
    "automatically, in a background thread, at most once an hour per home. 0 or off keeps them for ever.",
    f"{DURATION_FORMS} (30d, 12h...), or 0/off")
LOCAL_STORAGE_PATH = _declare(
    "ASYNCFLOW_LOCAL_STORAGE_PATH", _parse_directory, lambda: HOME.resolve() / "storage",
    "Directory for persisted results and cache records, shared by every process on the machine. "
    "Default: ASYNCFLOW_HOME/storage.", "an absolute directory path (~ allowed)")
RESULT_STORAGE = _declare(
    "ASYNCFLOW_RESULT_STORAGE", _parse_result_storage, "auto",
    "Where persisted results and cache records live: `local` (ASYNCFLOW_LOCAL_STORAGE_PATH: a directory on this "
    "machine, or one every machine mounts), a PostgreSQL URL (small results in that database: a cache hit on one "
    "machine serves every other), or `auto`: the PostgreSQL store's database when ASYNCFLOW_STORE is a PostgreSQL "
    "URL, else local.", "auto, local or postgresql://user:password@host:5432/database")
RESULT_STORAGE_MAX_BYTES = _declare(
    "ASYNCFLOW_RESULT_STORAGE_MAX_BYTES", _parse_int(1), 1024 * 1024,
    "The largest record (serialized result and header) the PostgreSQL result storage keeps; a larger result fails "
    "its attempt with an error that says so (local paths have no limit).", "an integer >= 1 (bytes)")
LOGGING_LEVEL = _declare(
    "ASYNCFLOW_LOGGING_LEVEL", _parse_level, "INFO",
    "Lowest level of asyncflow log lines written to the console and recorded in the store.",
    "DEBUG, INFO, WARNING, ERROR or CRITICAL")
LOGGING_FORMAT = _declare(
    "ASYNCFLOW_LOGGING_FORMAT", _parse_choice("console", "json"), "console",
    "`console` for Prefect-style lines, `json` for one JSON object per line.", "console or json")
LOGGING_EXTRA_LOGGERS = _declare(
    "ASYNCFLOW_LOGGING_EXTRA_LOGGERS", _parse_logger_names, (),
    "Standard-library loggers (of libraries your tasks use) whose records, emitted inside a flow or task run, "
    "are kept in that run's logs and shown on the console with the run's name (Prefect's "
    "PREFECT_LOGGING_EXTRA_LOGGERS).", "a comma-separated list of logger names, such as httpx,botocore")
LOGGING_LOG_PRINTS = _declare(
    "ASYNCFLOW_LOGGING_LOG_PRINTS", _parse_bool, False,
    "Default of `log_prints` for flows that do not set it.", "true or false (also 1/0, yes/no, on/off)")
TASK_DEFAULT_RETRIES = _declare(
    "ASYNCFLOW_TASK_DEFAULT_RETRIES", _parse_int(0), 0,
    "Retries of a task that does not set `retries`.", "an integer >= 0")
TASK_DEFAULT_RETRY_DELAY_SECONDS = _declare(
    "ASYNCFLOW_TASK_DEFAULT_RETRY_DELAY_SECONDS", _parse_delays, 0.0,
    "Retry delay of a task that does not set `retry_delay_seconds`.",
    "a number from 0 to 86400 or a JSON list of at most 50 of them, such as [1, 10, 100]")
FLOW_DEFAULT_RETRIES = _declare(
    "ASYNCFLOW_FLOW_DEFAULT_RETRIES", _parse_int(0), 0,
    "Retries of a flow that does not set `retries`.", "an integer >= 0")
FLOW_DEFAULT_RETRY_DELAY_SECONDS = _declare(
    "ASYNCFLOW_FLOW_DEFAULT_RETRY_DELAY_SECONDS", _parse_flow_delay, 0.0,
    "Retry delay in seconds of a flow that does not set `retry_delay_seconds`.", "a number from 0 to 86400")
THREAD_LIMIT = _declare(
    "ASYNCFLOW_TASK_RUNNER_THREAD_LIMIT", _parse_int(1), 64,
    "How many sync task runs the default runner executes in threads at once, per flow run (0 would admit "
    "none, and every flow would wait for ever).",
    "an integer >= 1")
RESULTS_PERSIST_BY_DEFAULT = _declare(
    "ASYNCFLOW_RESULTS_PERSIST_BY_DEFAULT", _parse_bool, False,
    "Persist every task's result (and cache with the DEFAULT policy) unless a task says otherwise.",
    "true or false")
TASKS_REFRESH_CACHE = _declare(
    "ASYNCFLOW_TASKS_REFRESH_CACHE", _parse_bool, False,
    "Recompute and overwrite cached results for every task that does not set `refresh_cache`.",
    "true or false")
TASKS_DEFAULT_PERSIST_RESULT = _declare(
    "ASYNCFLOW_TASKS_DEFAULT_PERSIST_RESULT", _parse_bool, None,
    "Whether tasks that do not set `persist_result` persist their results (and so cache with the DEFAULT "
    "policy); unset: their flow's `persist_result`, else ASYNCFLOW_RESULTS_PERSIST_BY_DEFAULT. `false` "
    "overrides the flow's. Read when a task is defined.", "true or false (or unset)")
TASKS_DEFAULT_NO_CACHE = _declare(
    "ASYNCFLOW_TASKS_DEFAULT_NO_CACHE", _parse_bool, False,
    "Give tasks that set neither `cache_policy` nor `cache_key_fn` the policy NO_CACHE (read when a task is "
    "defined).", "true or false")
TASKS_DISABLE_CACHING = _declare(
    "ASYNCFLOW_TASKS_DISABLE_CACHING", _parse_bool, False,
    "Turn caching off for every task, whatever its `cache_policy`, `cache_key_fn` or `result_storage_key` "
    "(read when a task is defined).", "true or false")

TASK_WORKER_LEASE_SECONDS = _declare(
    "ASYNCFLOW_TASK_WORKER_LEASE_SECONDS", _parse_lease, 30.0,
    "How long a task worker holds a background run without renewing its lease; a run whose worker died "
    "is delivered again after this.", "a number of seconds from 1 to 86400")
MAP_MAX_ITEMS = _declare(
    "ASYNCFLOW_MAP_MAX_ITEMS", _parse_int(1), 1_000_000,
    "Most items `.map()` takes from one iterable; more (an infinite iterator, say) is an error, raised after "
    "taking at most this many plus one.", "an integer >= 1")
BROKER_URL = _declare(
    "ASYNCFLOW_BROKER_URL", _parse_broker_url, None,
    "Queue of background runs (`task.delay`): unset for the SQLite store under ASYNCFLOW_HOME (one "
    "machine; the PostgreSQL store's database when ASYNCFLOW_STORE is a PostgreSQL URL), `sqlite:////absolute/path` "
    "for another SQLite file, `redis://host:port/db` or `postgresql://user:password@host/database` for many machines.",
    "sqlite:////absolute/path/to/file.db, redis://host:port/db or postgresql://user:password@host:5432/database")
TASK_WORKER_LOST_RUN_SECONDS = _declare(
    "ASYNCFLOW_TASK_WORKER_LOST_RUN_SECONDS", _parse_seconds, 60.0,
    "How long the future of a background run waits while the broker does not know the run (its record "
    "was deleted or pruned, or Redis restarted without persistence), or cannot be reached, before it "
    "raises LostRunError (BrokerUnavailableError). A run that is queued, served or not, is never lost.",
    "a number of seconds from 0 to 86400")
BROKER_RETENTION_SECONDS = _declare(
    "ASYNCFLOW_BROKER_RETENTION_SECONDS", _parse_retention_seconds, 7 * 24 * 3600.0,
    "How long the broker keeps a finished background run (state, result, pickled arguments): Redis "
    "expires it, SQLite-broker workers prune it (at start, then hourly). 0 keeps finished runs for ever.",
    f"{DURATION_FORMS} (7d...), or 0/off for ever")


def _similar(name: str, n: int) -> list[str]:
    """Declared names close to `name` (compared without the common ASYNCFLOW_ prefix)."""
    import difflib  # only on errors: keep importing asyncflow cheap

    bare = {setting[len("ASYNCFLOW_"):]: setting for setting in SETTINGS}
    wanted = name.strip().upper().removeprefix("ASYNCFLOW_")
    return [bare[match] for match in difflib.get_close_matches(wanted, list(bare), n=n, cutoff=0.7)]


def lookup(name: str) -> Setting:
    """The declared setting called `name` (case-insensitive); the error suggests the closest names."""
    setting = SETTINGS.get(name.strip().upper())
    if setting is not None:
        return setting
    close = _similar(name, 3)
    hint = f" Did you mean {' or '.join(close)}?" if close else ""
    raise SettingError(f"Unknown setting {name!r}.{hint} `asyncflow config view --show-defaults` lists "
                       f"every setting.")


# -- the profile file ------------------------------------------------------------------------------
class _Profile(NamedTuple):
    key: tuple[str | None, str | None]  # (ASYNCFLOW_HOME, HOME) from the environment: what the path depends on
    path: Path
    stamp: tuple[int, int] | None  # (mtime_ns, size) of the file read, None if it does not exist
    values: Mapping[str, str]
    checked: float  # time.monotonic() of the last look at the file


_profile_cache: _Profile | None = None
_profile_lock = threading.Lock()
_PROFILE_RECHECK_SECONDS = 1.0


def profile_path() -> Path:
    return HOME.resolve() / PROFILE_FILE_NAME


def _stamp(path: Path) -> tuple[int, int] | None:
    try:
        st = path.stat()
    except OSError:
        return None
    return (st.st_mtime_ns, st.st_size)


def _profile() -> _Profile:
    global _profile_cache
    key = (_getenv("ASYNCFLOW_HOME"), _getenv("HOME"))
    cached = _profile_cache
    now = time.monotonic()
    if cached is not None and cached.key == key and now - cached.checked < _PROFILE_RECHECK_SECONDS:
        return cached
    path = profile_path()
    stamp = _stamp(path)
    if cached is not None and cached.path == path and cached.stamp == stamp:
        profile = cached._replace(key=key, checked=now)
    else:
        profile = _Profile(key, path, stamp, _read_profile(path) if stamp is not None else {}, now)
    _profile_cache = profile
    return profile


def _profile_lines(path: Path) -> list[str]:
    try:
        return path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        return []
    except (OSError, UnicodeDecodeError) as exc:
        raise ProfileFileError(f"Cannot read the profile file {path}: {exc}. Fix or delete the file.") from None


def _parse_line(path: Path, number: int, line: str) -> tuple[str, str] | None:
    stripped = line.strip()
    if not stripped or stripped.startswith("#"):
        return None
    name, sep, raw = stripped.partition("=")
    if not sep or not name.strip():
        raise ProfileFileError(f"{path} line {number}: expected NAME=VALUE, got {line!r}. Fix the line or delete it.")
    return name.strip().upper(), raw.strip()


def _parse_line_or_none(path: Path, number: int, line: str) -> tuple[str, str] | None:
    try:
        return _parse_line(path, number, line)
    except SettingError:
        return None


def _read_profile(path: Path) -> dict[str, str]:
    values: dict[str, str] = {}
    for number, line in enumerate(_profile_lines(path), 1):
        entry = _parse_line(path, number, line)
        if entry is None:
            continue
        name, raw = entry
        setting = SETTINGS.get(name)
        if setting is None:
            close = _similar(name, 1)
            hint = f" (did you mean {close[0]}?)" if close else ""
            warnings.warn(f"{path} line {number}: unknown setting {name}{hint} is ignored; remove it with "
                          f"`asyncflow config unset {name}`.", stacklevel=2)
            continue
        if not setting.in_profile:
            raise ProfileFileError(f"{path} line {number}: {name} cannot be set in the profile, which lives under it; "
                               f"set the environment variable instead, and remove the line.")
        values[name] = raw
    return values


def reload() -> None:
    """Forget what was read from the profile file and re-check every setting at the next read."""
    global _profile_cache, _checked
    with _profile_lock:
        _profile_cache = None
        _checked = False


def profile_values() -> dict[str, str]:
    """The raw values the profile file sets (what `config view` shows as "profile")."""
    return dict(_profile().values)


def update_profile(set_values: Mapping[str, str] | None = None, unset: Iterable[str] = ()) -> Path:
    """Write settings into the profile file (or remove them), keeping its other lines and comments.

    Every name must be a declared setting that the profile can hold, and every value must parse:
    nothing is written otherwise. Returns the profile's path."""
    parsed: dict[str, str] = {}
    for name, raw in (set_values or {}).items():
        setting = lookup(name)
        if not setting.in_profile:
            raise SettingError(f"{setting.name} cannot be set in the profile, which lives under it; set the "
                               f"environment variable instead (export {setting.name}=...).")
        # a line break would end the line in the file and start another setting (W4)
        if len(f"-{raw}-".splitlines()) > 1 or "\x00" in raw:
            raise SettingError(f"Setting {setting.name}={raw!r} is invalid: a profile value is one line, and "
                               "this one contains a line break or NUL character. Nothing was written.")
        try:
            setting.parse(raw)
        except (ValueError, TypeError) as exc:
            raise SettingError(f"Setting {setting.name}={raw!r} is invalid: {exc}. Nothing was written.") from None
        parsed[setting.name] = raw.strip()
    path = profile_path()
    in_file = {entry[0] for number, line in enumerate(_profile_lines(path), 1)
               if (entry := _parse_line_or_none(path, number, line)) is not None}
    removing = set()
    for name in unset:
        upper = name.strip().upper()
        if upper not in SETTINGS and upper not in in_file:
            lookup(name)  # neither declared nor in the file: raises with suggestions
        removing.add(upper)
    with _profile_lock:
        lines = _profile_lines(path)
        out: list[str] = []
        for number, line in enumerate(lines, 1):
            entry = _parse_line_or_none(path, number, line)
            if entry is None:  # comments, blank lines, and malformed lines (kept for the user to fix)
                out.append(line)
            elif entry[0] in removing:
                continue
            elif entry[0] in parsed:
                out.append(f"{entry[0]}={parsed.pop(entry[0])}")
            else:
                out.append(line)
        if not lines:
            out.append("# asyncflow profile: NAME=VALUE per line; environment variables override these.")
        out.extend(f"{name}={raw}" for name, raw in parsed.items())
        _atomic_write(path, "\n".join(out) + "\n")
    reload()
    return path


def _atomic_write(path: Path, text: str) -> None:
    import tempfile

    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".profile-")
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        os.replace(tmp, path)
    except OSError as exc:
        raise SettingError(f"Cannot write the profile file {path}: {exc}. Set ASYNCFLOW_HOME to a writable "
                           f"directory.") from None


# -- the settings object ---------------------------------------------------------------------------
class Settings(Frozen, ValueEq):
    """Every setting's current value and where it came from ("environment", "profile", "default")."""

    __slots__ = ("values", "sources")
    values: Mapping[str, Any]
    sources: Mapping[str, str]

    def __init__(self, values: Mapping[str, Any], sources: Mapping[str, str]) -> None:
        self._set_fields(values, sources)

    def __getitem__(self, name: str) -> Any:
        return self.values[lookup(name).name]


_checked = False


def check_all() -> None:
    """Parse every setting; raise one SettingError that names each bad one."""
    global _checked
    get_settings()
    _checked = True


def get_settings() -> Settings:
    """Resolve every setting now (environment < profile < default). Raises SettingError naming each
    setting whose value is bad, where it came from and what it accepts."""
    global _checked
    values: dict[str, Any] = {}
    sources: dict[str, str] = {}
    errors: list[str] = []
    was_checked, _checked = _checked, True  # defaults computed from other settings must not recurse
    try:
        for name, setting in SETTINGS.items():
            try:
                values[name] = setting.resolve()
                sources[name] = setting.source()
            except SettingError as exc:
                if str(exc) not in errors:  # a broken profile file is one error, not one per setting
                    errors.append(str(exc))
    finally:
        _checked = was_checked
    if errors:
        raise SettingError(errors[0] if len(errors) == 1 else "Some settings are invalid:\n- " + "\n- ".join(errors))
    return Settings(values, sources)


def describe(name: str) -> dict[str, Any]:
    """One setting for `config view`: value (or the error), source, raw text, default, accepts, help.
    Never raises for a bad value: the error is in the entry. A broken profile file counts as empty
    here (`profile_error()` reports it once)."""
    setting = lookup(name)
    entry: dict[str, Any] = {"name": setting.name, "accepts": setting.accepts, "help": setting.help,
                             "source": "default", "raw": None, "value": None, "error": None}
    try:
        entry["default"] = _show(setting.default_value())
    except SettingError as exc:  # a default computed from a bad setting (LOCAL_STORAGE_PATH from HOME)
        entry["default"] = f"<{exc}>"
    raw = os.environ.get(setting.name)
    if raw:
        entry["source"], entry["raw"] = "environment", raw
    elif setting.in_profile:
        try:
            raw = _profile().values.get(setting.name)
        except ProfileFileError:
            raw = None
        if raw:
            entry["source"], entry["raw"] = "profile", raw
    try:
        entry["value"] = hide_password(_show(setting._parse(raw, entry["source"]) if raw else setting.default_value()))
    except SettingError as exc:
        entry["error"] = str(exc)
    entry["raw"] = hide_password(entry["raw"])
    return entry


def profile_error() -> str | None:
    """What is wrong with the profile file as a whole (None if nothing)."""
    try:
        _profile()
    except ProfileFileError as exc:
        return str(exc)
    return None


def _show(value: Any) -> Any:
    pathlib = sys.modules.get("pathlib")  # (not imported: no value is a Path)
    return str(value) if pathlib is not None and isinstance(value, pathlib.Path) else value
