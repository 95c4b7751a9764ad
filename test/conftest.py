"""Shared fixtures: tiny checkpoints written once per test session."""

from densepred_ros.testing import write_tiny_lotus, write_tiny_marigold
import pytest


@pytest.fixture(scope='session')
def checkpoints(tmp_path_factory):
    """Folders of tiny random-weight checkpoints in the real diffusers layout."""
    root = tmp_path_factory.mktemp('checkpoints')
    return {
        'lotus_g': write_tiny_lotus(root / 'lotus-depth-g', variant='g', space='depth'),
        'lotus_d': write_tiny_lotus(root / 'lotus-depth-d', variant='d', space='disparity'),
        'lotus_normals': write_tiny_lotus(root / 'lotus-normal-g', variant='g',
                                          space='normals'),
        'marigold_depth': write_tiny_marigold(root / 'marigold-depth', task='depth'),
        'marigold_normals': write_tiny_marigold(root / 'marigold-normals', task='normals'),
    }
