"""The PIIP vision tower: config, branches, deformable attention, interactions, presets, weights, FLOPs.

Names load on first use, so the configuration can be imported without torch modelling code (the Auto-class
registration in :mod:`piip_llava.registration` relies on it)."""

from __future__ import annotations

import importlib

_EXPORTS = {
    "BranchConfig": ".configuration_piip",
    "PiipVisionConfig": ".configuration_piip",
    "PiipVisionModel": ".modeling_piip",
    "TOWER_PRESETS": ".presets",
    "get_tower_config": ".presets",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name], __name__), name)


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
