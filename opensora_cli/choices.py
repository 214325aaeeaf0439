"""Value completion for options whose values come from the library's registries (and config keys)."""

from __future__ import annotations

from collections.abc import Callable


def _completer(values: Callable[[], tuple[str, ...] | list[str]]) -> Callable[[str], list[str]]:
    def complete(incomplete: str) -> list[str]:
        return [v for v in values() if v.startswith(incomplete)]

    return complete


def _models():
    from opensora.models.presets import DiT_models

    return list(DiT_models)


def _conditions():
    from opensora.models.dit import CONDITIONS

    return CONDITIONS


def _plugins():
    from opensora.training.plugins import PLUGINS

    return [name for name, spec in PLUGINS.items() if not spec.refusal]


def _precisions():
    from opensora.training.config import PRECISIONS

    return PRECISIONS


def _sp_modes():
    from opensora.parallel.dims import SP_MODES

    return SP_MODES


def _compressions():
    from opensora.compression import COMPRESSIONS

    return COMPRESSIONS


def _samplers():
    from opensora.diffusion.gaussian import SAMPLERS

    return SAMPLERS


def _resolutions():
    from opensora.data.video import RESOLUTIONS

    return list(RESOLUTIONS)


def _too_long():
    from opensora.data.video import TOO_LONG

    return TOO_LONG


def _config_keys():
    from opensora_cli.settings import SCHEMA

    return list(SCHEMA)


complete_model = _completer(_models)
complete_condition = _completer(_conditions)
complete_plugin = _completer(_plugins)
complete_sp = _completer(_sp_modes)
complete_compression = _completer(_compressions)
complete_sampler = _completer(_samplers)
complete_precision = _completer(_precisions)
complete_config_key = _completer(_config_keys)
complete_resolution = _completer(_resolutions)
complete_too_long = _completer(_too_long)
