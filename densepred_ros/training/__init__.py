"""Training of Lotus depth and normals models (`densepred train`).

Modules: `dataset` (frames and Lotus annotations), `configs` (miniature model configs),
`trainer` (the Lotus protocol), `evaluate` (accuracy after lidar alignment), `cli`.
Heavy imports (torch, diffusers) happen in the modules that need them.
"""
