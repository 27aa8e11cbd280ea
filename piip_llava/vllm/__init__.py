"""PIIP-LLaVA on vLLM: an out-of-tree model registered through vLLM's plugin system.

``pip install "piip-llava[vllm]"`` installs the ``vllm.general_plugins`` entry point that calls :func:`register` in
every vLLM process, so ``vllm serve DIR`` and ``LLM(model=DIR)`` load a directory that ``piip-llava build``,
``train`` or ``convert`` wrote (see the README, "Serve at scale"). Nothing here imports vLLM at package import.
"""

from __future__ import annotations

ARCHITECTURE = "PiipLlavaForConditionalGeneration"


def register() -> None:
    """Register the config with ``transformers``' Auto classes and the model with vLLM (lazily, by import path)."""
    from vllm import ModelRegistry

    import piip_llava.model  # noqa: F401  (AutoConfig / AutoProcessor registration)

    if ARCHITECTURE not in ModelRegistry.get_supported_archs():
        ModelRegistry.register_model(ARCHITECTURE, "piip_llava.vllm.model:PiipLlavaForConditionalGeneration")
