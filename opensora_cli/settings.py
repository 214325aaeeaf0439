"""User defaults: config file < OPENSORA_* environment variables < flags (flag wins)."""

from __future__ import annotations

import difflib
import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import platformdirs
import tomli_w

from opensora.errors import ConfigError, UserError
from opensora.training.plugins import PLUGINS

# Every key the config file may hold: (type, built-in default, help). Keys are "section.name";
# the environment variable is OPENSORA_SECTION_NAME.
SCHEMA: dict[str, tuple[type, Any, str]] = {
    "paths.home": (str, None, "where downloads, datasets and runs go (default: the platform data dir)"),
    "download.url": (str, None, "archive URL for `data download` (default: the public MSR-VTT zip)"),
    "encode.compression": (str, "raw", "raw | vqvae | sdvae"),
    "encode.vae": (str, None, "VAE hub id or local directory"),
    "encode.text_encoder": (str, "openai/clip-vit-base-patch32", "CLIP hub id or local directory"),
    "encode.fps": (float, None, "frames per second to sample (default: the video's own)"),
    "encode.max_seconds": (float, 20.0, "skip videos longer than this"),
    "encode.max_frames": (int, None, "skip videos with more frames than this"),
    "encode.batch_size": (int, 16, "frames per VAE batch"),
    "encode.device": (str, "auto", "cpu | cuda | auto"),
    "encode.num_workers": (int, 2, "decoding processes running beside the encoder"),
    "train.model": (str, "DiT/S-2", "model preset, e.g. DiT/XL-2"),
    "train.condition": (str, "cross-attn", "adaln | cross-attn | token-concat"),
    "train.plugin": (str, "hybrid", " | ".join(n for n, p in PLUGINS.items() if not p.refusal)),
    "train.precision": (str, "auto", "fp32 | bf16 | fp16 | auto"),
    "train.batch_size": (int, 4, "global batch size"),
    "train.lr": (float, 1e-4, "peak learning rate"),
    "train.steps": (int, 1000, "optimizer steps"),
    "train.ckpt_every": (int, 500, "checkpoint cadence in steps"),
    "train.keep": (int, 3, "how many checkpoints to keep"),
    "sample.ckpt": (str, None, "checkpoint to sample from (default: newest of the newest run)"),
    "sample.steps": (int, 50, "denoising steps"),
    "sample.sampler": (str, "ddim", "ddim | dpm"),
    "sample.cfg_scale": (float, 4.0, "classifier-free guidance scale"),
    "sample.device": (str, "auto", "cpu | cuda | auto"),
}


def _choices(key: str) -> tuple[str, ...] | None:
    """The values a key may take, from the library's registries (imported only when checked)."""
    if key == "train.model":
        from opensora.models.presets import DiT_models

        return tuple(DiT_models)
    if key == "train.condition":
        from opensora.models.dit import CONDITIONS

        return CONDITIONS
    if key == "encode.compression":
        from opensora.compression import COMPRESSIONS

        return COMPRESSIONS
    if key == "sample.sampler":
        from opensora.diffusion.gaussian import SAMPLERS

        return SAMPLERS
    if key == "train.precision":
        from opensora.training.config import PRECISIONS

        return PRECISIONS
    return tuple(PLUGINS) if key == "train.plugin" else None


# Numeric keys: (smallest allowed, whether the smallest itself is allowed). NaN and infinities never are.
_RANGES: dict[str, tuple[float, bool]] = {
    "encode.fps": (0, False), "encode.max_seconds": (0, False), "encode.max_frames": (1, True),
    "encode.batch_size": (1, True), "encode.num_workers": (0, True), "train.batch_size": (1, True),
    "train.lr": (0, False), "train.steps": (1, True), "train.ckpt_every": (1, True), "train.keep": (1, True),
    "sample.steps": (1, True), "sample.cfg_scale": (0, True),
}


def check_value(key: str, value: Any, where: str) -> None:
    """Raise a ConfigError if `value` is not one `key` may take (choices, ranges), naming `where` it came from."""
    import math

    choices = _choices(key)
    if choices is not None and value not in choices:
        close = difflib.get_close_matches(str(value), choices, n=1)
        hint = f" (did you mean {close[0]}?)" if close else ""
        raise ConfigError([f"{where}: {key} = {value!r} is not one of {', '.join(choices)}{hint}"])
    if key in _RANGES and isinstance(value, (int, float)):
        low, inclusive = _RANGES[key]
        if not math.isfinite(value) or value < low or (value == low and not inclusive):
            bound = f">= {low}" if inclusive else f"> {low}"
            raise ConfigError([f"{where}: {key} = {value!r} must be a finite number {bound}"])


def config_path() -> Path:
    """The config file: $OPENSORA_CONFIG, else <user config dir>/config.toml."""
    env = os.environ.get("OPENSORA_CONFIG")
    return Path(env) if env else Path(platformdirs.user_config_dir("opensora")) / "config.toml"


def _env_name(key: str) -> str:
    return "OPENSORA_" + key.replace(".", "_").upper()


def _coerce(key: str, value: Any, where: str) -> Any:
    typ = SCHEMA[key][0]
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
        if key not in SCHEMA:
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
    known = {_env_name(k): k for k in SCHEMA}
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
        return self.values.get(key, SCHEMA[key][1])

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
    if key not in SCHEMA:
        close = difflib.get_close_matches(key, list(SCHEMA), n=1)
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
    if key not in SCHEMA:
        close = difflib.get_close_matches(key, list(SCHEMA), n=1)
        hint = f" (did you mean {close[0]}?)" if close else " (see `opensora config keys`)"
        raise UserError(f"unknown config key '{key}'{hint}")
    path = config_path()
    values = read_config(path)
    was_set = values.pop(key, None) is not None
    if was_set:
        write_config(path, values)
    return path, was_set
    return path


def default_help(key: str) -> str:
    """The `--help` suffix for an option whose default comes from config key `key` (escaped for rich)."""
    value = SCHEMA[key][1]
    return f" \\[default: {'none' if value is None else value}; config {key}]"
