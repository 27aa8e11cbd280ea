"""The PIIP vision tower: config, branches, deformable attention, interactions, presets, weights, FLOPs."""

from .configuration_piip import BranchConfig, PiipVisionConfig
from .modeling_piip import PiipVisionModel
from .presets import TOWER_PRESETS, get_tower_config

__all__ = ["BranchConfig", "PiipVisionConfig", "PiipVisionModel", "TOWER_PRESETS", "get_tower_config"]
