"""Calibration: from the equivariance spread (and a few cheap cues) to an error map in mm.

- :mod:`.cues`  per-voxel cues of one registration (sigma, inverse consistency from one
  reversed pass, local NCC residual, residual flow, Jacobian), all on the target's native grid
  with windows in mm (the measures themselves in :mod:`.alignment`);
- :mod:`.cases` known-deformation cases built from real images (the evaluation's generators,
  including ranges the network cannot follow, so failures are represented);
- :mod:`.model` the error model (monotone log-linear regression) and its split-conformal bound;
- :mod:`.qc`    the per-case verdict pass / review / fail, calibrated on the same cases;
- :mod:`.store` the versioned JSON that holds all of it, tied to one model and one grid;
- :mod:`.apply` what ``estimate`` runs when a calibration is in use.
"""
