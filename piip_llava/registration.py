"""Register PIIP-LLaVA with the ``transformers`` Auto classes as soon as those classes load.

``import piip_llava`` must make ``AutoConfig`` / ``AutoModel`` / ``AutoModelForImageTextToText`` /
``AutoImageProcessor`` / ``AutoProcessor.from_pretrained(saved_dir)`` work, yet importing ``transformers``' Auto
classes costs seconds (they import torch) and ``piip-llava --help`` needs none of it. So the registration waits:
each ``transformers.models.auto.*`` module registers our classes right after it executes (or at once, if it was
imported before us). The registrations run only when no Auto module and no module of ours is half-way through its
import: importing ``AutoModel`` imports ``configuration_auto`` on the way, and importing our modelling code imports
``AutoModel``; registering imports our classes, which must not find either half-initialised.
See docs/design.md#lazy-registration-with-the-auto-classes and docs/benchmarks.md for the measured import times.

This module imports nothing heavy at import time.
"""

from __future__ import annotations

import importlib.machinery
import logging
import sys
import threading
from collections.abc import Callable
from types import ModuleType


def _register_configs(configuration_auto: ModuleType) -> None:
    from .model.configuration_piip_llava import PiipLlavaConfig
    from .model.vision.configuration_piip import PiipVisionConfig

    configuration_auto.AutoConfig.register(PiipVisionConfig.model_type, PiipVisionConfig, exist_ok=True)
    configuration_auto.AutoConfig.register(PiipLlavaConfig.model_type, PiipLlavaConfig, exist_ok=True)


def _register_models(modeling_auto: ModuleType) -> None:
    from .model.configuration_piip_llava import PiipLlavaConfig
    from .model.modeling_piip_llava import PiipLlavaForConditionalGeneration, PiipLlavaModel
    from .model.vision.configuration_piip import PiipVisionConfig
    from .model.vision.modeling_piip import PiipVisionModel

    modeling_auto.AutoModel.register(PiipVisionConfig, PiipVisionModel, exist_ok=True)
    modeling_auto.AutoModel.register(PiipLlavaConfig, PiipLlavaModel, exist_ok=True)
    modeling_auto.AutoModelForImageTextToText.register(
        PiipLlavaConfig, PiipLlavaForConditionalGeneration, exist_ok=True
    )


def _register_image_processor(image_processing_auto: ModuleType) -> None:
    from .model.configuration_piip_llava import PiipLlavaConfig
    from .model.processing_piip_llava import PiipLlavaImageProcessor

    image_processing_auto.AutoImageProcessor.register(
        PiipLlavaConfig, slow_image_processor_class=PiipLlavaImageProcessor, exist_ok=True
    )


def _register_processor(processing_auto: ModuleType) -> None:
    from .model.configuration_piip_llava import PiipLlavaConfig
    from .model.processing_piip_llava import PiipLlavaProcessor

    processing_auto.AutoProcessor.register(PiipLlavaConfig, PiipLlavaProcessor, exist_ok=True)


AUTO_MODULES: dict[str, Callable[[ModuleType], None]] = {
    "transformers.models.auto.configuration_auto": _register_configs,
    "transformers.models.auto.modeling_auto": _register_models,
    "transformers.models.auto.image_processing_auto": _register_image_processor,
    "transformers.models.auto.processing_auto": _register_processor,
}


class _RegisteringLoader:
    """Runs the real loader, then tells the finder; everything else is the real loader's."""

    def __init__(self, loader, finder: _AutoModuleFinder) -> None:
        self._loader = loader
        self._finder = finder

    def create_module(self, spec):
        return self._loader.create_module(spec)

    def exec_module(self, module: ModuleType) -> None:
        state = self._finder.state
        state.depth = getattr(state, "depth", 0) + 1
        try:
            self._loader.exec_module(module)
        finally:
            state.depth -= 1
        if state.depth == 0:
            self._finder.register_loaded()

    def __getattr__(self, name: str):  # get_source, get_filename, ... for inspect and tracebacks
        return getattr(self._loader, name)


class _AutoModuleFinder:
    """Finds nothing itself: wraps the loaders of the ``transformers`` Auto modules still waiting to register and of
    our own modules, to know when none of them is being imported."""

    def __init__(self, pending: dict[str, Callable[[ModuleType], None]]) -> None:
        self.pending = pending
        # Per thread: the watched modules it is executing now, one inside the other, and whether it is registering.
        # (Another thread's half-imported module is behind that module's import lock, so only our own thread's
        # imports can be seen half-way.)
        self.state = threading.local()
        self.lock = threading.RLock()  # one registration at a time
        self.error: Exception | None = None  # the last registration that failed (it stays pending)

    def find_spec(self, fullname, path, target=None):
        if fullname not in self.pending and not fullname.startswith(f"{__package__}."):
            return None
        spec = importlib.machinery.PathFinder.find_spec(fullname, path)
        if spec is None or spec.loader is None:
            return None
        spec.loader = _RegisteringLoader(spec.loader, self)
        return spec

    def register_loaded(self) -> None:
        """Register with every waiting Auto module that is now imported, configs first. Registering imports our
        modules, which may import more Auto modules: those are picked up by the same loop, not by a nested one."""
        if getattr(self.state, "registering", False):
            return
        with self.lock:
            self.state.registering = True
            try:
                ready = self._next_ready()
                while ready is not None:
                    try:
                        self.pending[ready](sys.modules[ready])
                    except Exception as error:  # noqa: BLE001
                        # Never fail the import that called us: importlib would drop that transformers module from
                        # sys.modules while callers keep its classes (two AutoModel mappings). Try again at the
                        # next watched import, e.g. of our modelling code.
                        self.error = error
                        logging.getLogger(__name__).debug("registering with %s failed", ready, exc_info=True)
                        break
                    del self.pending[ready]
                    ready = self._next_ready()
            finally:
                self.state.registering = False
            if not self.pending and self in sys.meta_path:
                sys.meta_path.remove(self)

    def _next_ready(self) -> str | None:
        return next((name for name in self.pending if name in sys.modules), None)


def register_with_transformers() -> None:
    """Register now with the Auto modules already imported, and with the others when they are imported."""
    if any(isinstance(finder, _AutoModuleFinder) for finder in sys.meta_path):
        return
    pending = {}
    for name, register in AUTO_MODULES.items():
        module = sys.modules.get(name)
        if module is not None:
            register(module)
        else:
            pending[name] = register
    if pending:
        sys.meta_path.insert(0, _AutoModuleFinder(pending))
