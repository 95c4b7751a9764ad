"""The names of the prediction spaces (imports nothing: shared by models and alignment).

- 'depth': affine-invariant depth in [0, 1], larger = farther;
- 'disparity': affine-invariant inverse depth in [0, 1], larger = nearer;
- 'log_depth': affine-invariant log-depth in [0, 1], larger = farther;
- 'normals': unit surface normals.
"""

DEPTH = 'depth'
DISPARITY = 'disparity'
LOG_DEPTH = 'log_depth'
NORMALS = 'normals'
DEPTH_SPACES = (DEPTH, DISPARITY, LOG_DEPTH)
SPACES = DEPTH_SPACES + (NORMALS,)
