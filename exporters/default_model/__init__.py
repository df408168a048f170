"""The default regrisk model: a small VoxelMorph-style network trained here on SynthMorph-style
synthetic pairs, its training, export, sample data preparation and evaluation scripts.

Nothing here imports torch at module level (torch is an optional extra); import the submodules
(``network``, ``synth``, ``train``, ``export``) explicitly when torch is installed.
"""
