"""Scene styles: the same generated geometry under another look and camera.

A style changes the light, the sky, a colour grade of the image, the camera height and
the field of view, never the scene's geometry or its random draws, so seeds stay
comparable across styles. 'default' changes nothing (the generator's own output).
"""

from dataclasses import dataclass, replace
from typing import Optional, Tuple

import numpy as np

DEFAULT = 'default'


@dataclass(frozen=True)
class Style:
    """How a style changes a rendered frame.

    Attributes:
        name: the style's name.
        sun_elevation_deg: elevation of the directional light, degrees (None: the scene's).
        ambient: ambient light fraction in [0, 1] (None: the scene's).
        sky_horizon, sky_zenith: sky RGB in [0, 1] (None: the scene's).
        fog_distance: metres (None: the scene's).
        grade: 3×3 colour matrix applied to linear RGB in [0, 1] (rows: output channels).
        gamma: exponent applied after the grade (1: none).
        camera_lift: metres added to the rig's height (world z up); the lidar moves along.
        hfov_deg: camera horizontal field of view, degrees (None: the caller's).
    """

    name: str
    sun_elevation_deg: Optional[float] = None
    ambient: Optional[float] = None
    sky_horizon: Optional[Tuple[float, float, float]] = None
    sky_zenith: Optional[Tuple[float, float, float]] = None
    fog_distance: Optional[float] = None
    grade: Tuple[Tuple[float, ...], ...] = ((1.0, 0.0, 0.0), (0.0, 1.0, 0.0), (0.0, 0.0, 1.0))
    gamma: float = 1.0
    camera_lift: float = 0.0
    hfov_deg: Optional[float] = None

    def scene(self, scene):
        """Return the scene with this style's light, sky and fog."""
        if self.name == DEFAULT:
            return scene
        changes = {}
        if self.sun_elevation_deg is not None:
            light = np.asarray(scene.light_direction, dtype=np.float64)
            azimuth = np.arctan2(light[1], light[0])
            elevation = np.radians(self.sun_elevation_deg)
            changes['light_direction'] = np.array([
                np.cos(elevation) * np.cos(azimuth), np.cos(elevation) * np.sin(azimuth),
                np.sin(elevation)])
        for name in ('ambient', 'sky_horizon', 'sky_zenith', 'fog_distance'):
            if getattr(self, name) is not None:
                changes[name] = getattr(self, name)
        return replace(scene, **changes)

    def pose(self, T_world_rig: np.ndarray) -> np.ndarray:
        """Return the 4×4 rig pose lifted by ``camera_lift`` metres."""
        if not self.camera_lift:
            return T_world_rig
        lifted = np.array(T_world_rig, dtype=np.float64)
        lifted[2, 3] += self.camera_lift
        return lifted

    def hfov(self, hfov_deg: float) -> float:
        """Return the field of view to render with, degrees."""
        return hfov_deg if self.hfov_deg is None else self.hfov_deg

    def image(self, rgb: np.ndarray) -> np.ndarray:
        """Return the colour-graded H×W×3 uint8 image."""
        if self.name == DEFAULT:
            return rgb
        linear = rgb.astype(np.float32) / 255.0
        graded = np.clip(linear @ np.asarray(self.grade, np.float32).T, 0.0, 1.0)
        if self.gamma != 1.0:
            graded = graded ** self.gamma
        return (graded * 255.0 + 0.5).astype(np.uint8)


STYLES = {
    DEFAULT: Style(DEFAULT),
    # Low evening sun, warm grade, dark sky and haze; camera 1 m higher, wider lens.
    'dusk': Style('dusk', sun_elevation_deg=7.0, ambient=0.18,
                  sky_horizon=(0.95, 0.55, 0.30), sky_zenith=(0.12, 0.12, 0.30),
                  fog_distance=70.0,
                  grade=((1.05, 0.15, 0.0), (0.05, 0.80, 0.05), (0.0, 0.10, 0.55)),
                  gamma=1.25, camera_lift=1.0, hfov_deg=90.0),
}


def get_style(name: str) -> Style:
    """Return the style of a name ('default', 'dusk').

    Raises:
        ValueError: unknown style.
    """
    if name not in STYLES:
        raise ValueError(f'unknown style {name!r}; choose one of {", ".join(STYLES)}')
    return STYLES[name]
