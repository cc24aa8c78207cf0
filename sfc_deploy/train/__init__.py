"""Training: SFC on a frozen backbone (``sfc.py``, with the head-feature cache in ``cache.py``) and
clip-level backbone training for data without pretrained weights (``backbone.py``)."""
