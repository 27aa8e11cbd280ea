"""The PIIP vision tower: config, branches, deformable attention, interactions, presets, weights, FLOPs.

Names load on first use, so the configuration can be imported without torch modelling code (the Auto-class
registration in :mod:`piip_llava.registration` relies on it)."""

from __future__ import annotations

from piip_llava.lazy import lazy_exports

_EXPORTS = {
    "BranchConfig": ".configuration_piip",
    "PiipVisionConfig": ".configuration_piip",
    "PiipVisionModel": ".modeling_piip",
    "TOWER_PRESETS": ".presets",
    "get_tower_config": ".presets",
}

__all__, __getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
