"""The default regrisk model: a small VoxelMorph-style network trained here on SynthMorph-style
synthetic pairs, its training, export, sample data preparation and evaluation scripts.

Only ``network``, ``export``, ``templates`` and ``prepare_sample`` are installed with regrisk;
the training code (``train``, ``synth``, ``evaluate``) and its records stay in the repository
(pyproject ``wheel.exclude``). Nothing here imports torch at module level (torch is an optional
extra); import the submodules explicitly when torch is installed.
"""
