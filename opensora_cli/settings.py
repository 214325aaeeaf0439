"""User defaults: config file < OPENSORA_* environment variables < flags (flag wins)."""

from __future__ import annotations

import difflib
import functools
import os
import tomllib
from dataclasses import MISSING, Field, dataclass, field
from pathlib import Path
from typing import Any

import platformdirs
import tomli_w

from opensora.errors import ConfigError, UserError
from opensora.registry import resolve
from opensora.schema import base_type, default_of, flag_of, setting, settings_of, value_problem


@dataclass
class PathsConfig:
    """Where the CLI keeps its files (the library is always given paths)."""

    home: str | None = setting(None, "Where downloads, datasets and runs go.", shown="the platform data dir")


# Each section of the config file is a config dataclass of the library; its settings are the keys
# "section.field" and the variables OPENSORA_SECTION_FIELD. Nothing here restates a default.
SECTIONS = {
    "paths": "opensora_cli.settings:PathsConfig",
    "download": "opensora.data.config:DownloadConfig",
    "collate": "opensora.data.config:CollateConfig",
    "encode": "opensora.data.config:EncodeConfig",
    "train": "opensora.training.config:TrainConfig",
    "sample": "opensora.sampling.config:SampleConfig",
    "eval": "opensora.evaluation.config:EvalConfig",
    "demo": "opensora.demo:DemoConfig",
}


@dataclass(frozen=True)
class Key:
    """One setting: its config key, the dataclass field behind it, and what the CLI shows of it."""

    key: str
    cls: type
    field: Field

    @property
    def type(self) -> type:
        """int, float, str, bool or list."""
        return base_type(self.cls, self.field)

    @property
    def default(self) -> Any:
        """The built-in default (None when there is none)."""
        value = default_of(self.field)
        return None if value is MISSING else value

    @property
    def help(self) -> str:
        """The one-line meaning."""
        return self.field.metadata["help"]

    @property
    def shown_default(self) -> str:
        """The built-in default as `--help` and `config keys` show it."""
        shown = self.field.metadata.get("shown")
        value = self.default
        if value is None or value == () or (shown and not isinstance(value, (int, float))):
            return shown or "none"
        return str(value).lower() if isinstance(value, bool) else str(value)

    @property
    def flag(self) -> str:
        """The CLI option that sets it."""
        return flag_of(self.field)

    @property
    def env(self) -> str:
        """The environment variable that sets it."""
        return _env_name(self.key)


@functools.cache
def schema() -> dict[str, Key]:
    """Every key the config file may hold, derived from the sections' config dataclasses."""
    out = {}
    for section, path in SECTIONS.items():
        cls = resolve(path)
        for f in settings_of(cls):
            out[f"{section}.{f.name}"] = Key(f"{section}.{f.name}", cls, f)
    return out


def check_value(key: str, value: Any, where: str) -> None:
    """Raise a ConfigError if `value` is not one `key` may take (choices, ranges), naming `where` it came from."""
    problem = value_problem(schema()[key].field, value, f"{where}: {key} =")
    if problem:
        raise ConfigError([problem])


def config_path() -> Path:
    """The config file: $OPENSORA_CONFIG, else <user config dir>/config.toml."""
    env = os.environ.get("OPENSORA_CONFIG")
    return Path(env) if env else Path(platformdirs.user_config_dir("opensora")) / "config.toml"


def _env_name(key: str) -> str:
    return "OPENSORA_" + key.replace(".", "_").upper()


def _coerce(key: str, value: Any, where: str) -> Any:
    typ = schema()[key].type
    if typ is list:
        if isinstance(value, str):  # an environment variable: comma-separated
            return [v.strip() for v in value.split(",") if v.strip()]
        if isinstance(value, list) and all(isinstance(v, str) for v in value):
            return value
        raise ConfigError([f"{where}: {key} must be a list of strings, got {value!r}"])
    if typ is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, typ) and not (typ is int and isinstance(value, bool)):
        return value
    if isinstance(value, str):
        try:
            if typ is int:
                return int(value)
            if typ is float:
                return float(value)
            if typ is bool:
                if value.lower() in ("1", "true", "yes", "on", "0", "false", "no", "off"):
                    return value.lower() in ("1", "true", "yes", "on")
        except ValueError:
            pass
    raise ConfigError([f"{where}: {key} must be {typ.__name__}, got {value!r}"])


def _flatten(data: dict, prefix: str = "") -> dict[str, Any]:
    out = {}
    for k, v in data.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(_flatten(v, key + "."))
        else:
            out[key] = v
    return out


def read_config(path: Path) -> dict[str, Any]:
    """Read and validate the config file (missing file = empty); every problem in one error."""
    if not path.exists():
        return {}
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as e:
        raise UserError(f"config file {path}: {e}; fix that line or delete the file "
                        "(OPENSORA_CONFIG=/dev/null runs without it)") from None
    except (UnicodeDecodeError, OSError) as e:
        why = "not UTF-8 text" if isinstance(e, UnicodeDecodeError) else (e.strerror or str(e))
        raise UserError(f"config file {path}: {why}; fix or delete it (OPENSORA_CONFIG=/dev/null runs without it)") from None
    values, problems = {}, []
    for key, value in _flatten(data).items():
        if key not in schema():
            problems.append(f"config file {path}: unknown key '{key}' (see `opensora config keys`)")
            continue
        try:
            values[key] = _coerce(key, value, f"config file {path}")
            check_value(key, values[key], f"config file {path}")
        except ConfigError as e:
            problems.extend(e.problems)
    if problems:
        raise ConfigError(problems)
    return values


def write_config(path: Path, values: dict[str, Any]) -> None:
    """Write the flat key/values back as sectioned TOML, atomically."""
    from opensora.fsutil import write_text_atomic

    nested: dict[str, dict] = {}
    for key, value in sorted(values.items()):
        section, name = key.split(".", 1)
        nested.setdefault(section, {})[name] = value
    write_text_atomic(path, tomli_w.dumps(nested))


# OPENSORA_* variables that are not config keys.
_OTHER_ENV = {"OPENSORA_CONFIG", "OPENSORA_HOME", "OPENSORA_DEBUG", "OPENSORA_SHARED_DATA"}


def read_environment() -> dict[str, Any]:
    """The OPENSORA_SECTION_KEY variables, checked; an unknown OPENSORA_* name is an error, not ignored."""
    values, problems = {}, []
    known = {_env_name(k): k for k in schema()}
    for name, raw in os.environ.items():
        if not name.startswith("OPENSORA_") or name in _OTHER_ENV:
            continue
        if name not in known:
            close = difflib.get_close_matches(name, [*known, *_OTHER_ENV], n=1)
            hint = f"did you mean {close[0]}?" if close else "see `opensora config keys`"
            problems.append(f"environment variable {name} is not a setting ({hint})")
            continue
        key, where = known[name], f"environment variable {name}"
        try:
            values[key] = _coerce(key, raw, where)
            check_value(key, values[key], where)
        except ConfigError as e:
            problems.extend(e.problems)
    if problems:
        raise ConfigError(problems)
    return values


@dataclass
class Settings:
    """The merged defaults for one invocation, read when first needed.

    Commands that need no defaults (`config path`, `inspect`, ...) work even when the config
    file is broken; the ones that do report the file's problem in one line.
    """

    file: Path
    _values: dict[str, Any] | None = field(default=None, repr=False)

    @classmethod
    def load(cls) -> Settings:
        """Settings over the config file and the OPENSORA_* environment (read on first use)."""
        return cls(config_path())

    @property
    def values(self) -> dict[str, Any]:
        """Config file values overlaid with the environment's, every problem in one error."""
        if self._values is None:
            self._values = {**read_config(self.file), **read_environment()}
        return self._values

    def get(self, key: str, flag: Any = None) -> Any:
        """The flag if given, else the environment/config value, else the built-in default."""
        if flag is not None:
            return flag
        return self.values.get(key, schema()[key].default)

    def source(self, key: str, flag: Any = None) -> str:
        """Where `get` found the value: flag, env, config or default."""
        if flag is not None:
            return "flag"
        if os.environ.get(_env_name(key)) is not None:
            return "env"
        return "config" if key in self.values else "default"

    @property
    def home(self) -> Path:
        """Root of downloads/, datasets/ and runs/ ($OPENSORA_HOME, paths.home, or the data dir)."""
        home = os.environ.get("OPENSORA_HOME") or self.values.get("paths.home")
        return Path(home).expanduser() if home else Path(platformdirs.user_data_dir("opensora"))


def set_value(key: str, raw: str) -> tuple[Path, Any]:
    """Validate and store one key in the config file; return (file, stored value)."""
    if key not in schema():
        close = difflib.get_close_matches(key, list(schema()), n=1)
        hint = f" (did you mean {close[0]}?)" if close else " (see `opensora config keys`)"
        raise UserError(f"unknown config key '{key}'{hint}")
    path = config_path()
    values = read_config(path)
    values[key] = _coerce(key, raw, f"`opensora config set {key}`")
    check_value(key, values[key], f"`opensora config set {key}`")
    write_config(path, values)
    return path, values[key]


def unset_value(key: str) -> tuple[Path, bool]:
    """Remove one key from the config file; (file, whether it was set)."""
    if key not in schema():
        close = difflib.get_close_matches(key, list(schema()), n=1)
        hint = f" (did you mean {close[0]}?)" if close else " (see `opensora config keys`)"
        raise UserError(f"unknown config key '{key}'{hint}")
    path = config_path()
    values = read_config(path)
    was_set = values.pop(key, None) is not None
    if was_set:
        write_config(path, values)
    return path, was_set


def _convert(value: Any, annotation: str) -> Any:
    """A flag's or config value as the field's type wants it (paths, tuples)."""
    if value is None:
        return None
    if "tuple" in annotation:
        return tuple(Path(v) if "Path" in annotation else v for v in value)
    if "Path" in annotation and isinstance(value, str):
        return Path(value).expanduser()
    if annotation.startswith("str") and isinstance(value, Path):
        return str(value)
    return value


def build_config(settings: Settings, section: str, params: dict[str, Any], **given: Any) -> Any:
    """The section's config: each setting from `params` (the command's flags, None = not given), else the
    environment or config file, else its default; `given` sets fields the command worked out itself."""
    cls = resolve(SECTIONS[section])
    values = {}
    for f in settings_of(cls):
        if f.name in given:
            continue
        value = settings.get(f"{section}.{f.name}", params.get(f.name))
        if value is not None or default_of(f) is None:
            values[f.name] = _convert(value, str(f.type))
    return cls(**values, **given)
