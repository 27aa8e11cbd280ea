"""PIIP-LLaVA: multimodal LLMs with a Parameter-Inverted Image Pyramid vision tower.

Importing the package registers the models with the ``transformers`` Auto classes (``AutoConfig``, ``AutoModel``,
``AutoModelForImageTextToText``, ``AutoImageProcessor``, ``AutoProcessor``), lazily: nothing heavy is imported
until those classes are (see :mod:`piip_llava.registration`).
"""

from .registration import register_with_transformers

__version__ = "0.1.0"

register_with_transformers()
