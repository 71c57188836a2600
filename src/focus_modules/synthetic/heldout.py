"""Seed tags that keep the synthetic scenes of training, validation and evaluation apart.

A scene's seed is a tuple whose first value is a tag (:func:`focus_modules.synthetic.make_scene`
hashes the whole tuple, so different tags never share a scene). The tiny model's training
draws ``(TRAIN_SEED_TAG, s, i)`` for its ``--seed s``; every other tag below is never trained on.
"""

TRAIN_SEED_TAG = 7001
# The held-out benchmark: ``python -m focus_modules.synthetic --seed 9001`` writes scenes
# ``(9001, family, i)``.
HELDOUT_SEED = 9001
# The CI regression test's held-out set (another seed of the same writer).
REGRESSION_SEED = 9002
# The demo's scenes ``(DEMO_SEED_TAG, 0, i)``.
DEMO_SEED_TAG = 9101
# Validation scenes of the tiny model's probes (examples/tiny_model/probes.py): used to choose
# settings, neither trained on nor benchmarked.
VALIDATION_SEED_TAG = 9501
