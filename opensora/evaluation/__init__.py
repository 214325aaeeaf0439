"""Evaluation of a checkpoint: samples of a split's captions scored by CLIP score, FVD and, on the
built-in world, the demo's colour and direction judge (`evaluate.py`), under a pinned protocol."""
