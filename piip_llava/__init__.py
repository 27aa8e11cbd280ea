"""PIIP-LLaVA: multimodal LLMs with a Parameter-Inverted Image Pyramid vision tower."""

__version__ = "0.1.0"
