"""Checkpoint conversion (``piip-llava convert``). Every source key is used or listed as deliberately dropped
(``conversion.json``); anything else is an error naming the keys.

- ``official_piip``: official PIIP-LLaVA checkpoints (stage 2, stage-1 ``mm_projector.bin``, tower state dicts);
- ``llava``: original LLaVA-1.5 checkpoints → our single-branch baseline;
- ``hf_llava``: our baseline → ``transformers``' ``LlavaForConditionalGeneration``;
- ``common``: the strict key mapping they share. Nothing is imported here, so the CLI starts fast.
"""
