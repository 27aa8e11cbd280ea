"""Models: the PIIP vision tower (``piip_llava.model.vision``)."""
