"""Shared fixtures: tiny checkpoints written once per test session; the node tests' rig.

The node fixtures import rclpy only when a test asks for them, so the ROS-free tests run
without it.
"""

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


@pytest.fixture(scope='module')
def ros():
    """Initialise rclpy once for the module, on a ROS domain id of its own."""
    from densepred_ros.domain_ids import reserve_domain_id
    from node_rig import ros_session
    yield from ros_session(reserve_domain_id())


@pytest.fixture(scope='module')
def checkpoint(tmp_path_factory) -> str:
    """Write a tiny random-weight Lotus-G depth model: meaningless values, real code path."""
    path = tmp_path_factory.mktemp('node') / 'lotus-depth-g'
    return str(write_tiny_lotus(path, variant='g', space='depth', processing_resolution=64))


@pytest.fixture(scope='module')
def frame():
    """Render an indoor scene seen by a 96×72 camera and a 32-beam lidar."""
    from densepred_ros.synthetic import make_frame
    from node_rig import HEIGHT, WIDTH
    return make_frame(seed=3, kind='indoor', width=WIDTH, height=HEIGHT, beams=32)


@pytest.fixture
def make_rig(ros, request):
    """Make rigs (node + helper) namespaced after the test."""
    from node_rig import rig_factory
    yield from rig_factory(request)


@pytest.fixture(params=['numpy', 'numba'])
def kernels(request, monkeypatch):
    """Run the test with geometry's numpy path, then with its numba kernels."""
    from densepred_ros import geometry
    loaded = geometry._load_kernels()
    if request.param == 'numba' and loaded is None:
        pytest.skip('numba is not installed')
    monkeypatch.setattr(geometry, '_kernels', loaded if request.param == 'numba' else None)
    return request.param
