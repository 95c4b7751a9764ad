"""Time JPEG decoders side by side on generated street frames (1242×375 and 1920×1080).

Usage: PYTHONPATH=. python scripts/bench_decode.py [--repeats 50] [--quality 95]

Each decoder turns the same JPEG bytes into H×W×3 uint8 RGB; the median of ``repeats``
runs is printed per decoder and size, with the node's own path (`decode.compressed_to_rgb`:
header check + simplejpeg) first. Decoders that are not installed are reported as such. The
targets of the compressed-input issue are 5 ms (1242×375) and 15 ms (1920×1080).
"""

import argparse
import io
import statistics
import time
from typing import Callable, Dict, Optional

from densepred_ros import decode
from densepred_ros.synthetic import make_frame
import numpy as np
from PIL import Image
from sensor_msgs.msg import CompressedImage

TARGETS_MS = {(1242, 375): 5.0, (1920, 1080): 15.0}


def _decoders() -> Dict[str, Optional[Callable[[bytes], np.ndarray]]]:
    found: Dict[str, Optional[Callable[[bytes], np.ndarray]]] = {}

    def node_path(data: bytes) -> np.ndarray:
        return decode.compressed_to_rgb(CompressedImage(format='rgb8; jpeg compressed bgr8',
                                                        data=data))

    def pillow(data: bytes) -> np.ndarray:
        with Image.open(io.BytesIO(data)) as image:
            return np.asarray(image.convert('RGB'))

    found['densepred compressed_to_rgb'] = node_path
    found['Pillow'] = pillow
    try:
        import simplejpeg
        found['simplejpeg'] = lambda data: simplejpeg.decode_jpeg(data, colorspace='RGB')
    except ImportError:
        found['simplejpeg'] = None
    try:
        import turbojpeg
        jpeg = turbojpeg.TurboJPEG()
        found['PyTurboJPEG'] = lambda data: jpeg.decode(data, pixel_format=turbojpeg.TJPF_RGB)
    except (ImportError, OSError, RuntimeError):
        found['PyTurboJPEG'] = None  # the wheel needs a system libturbojpeg
    try:
        import cv2
        flag = getattr(cv2, 'IMREAD_COLOR_RGB', None)

        def opencv(data: bytes) -> np.ndarray:
            raw = np.frombuffer(data, np.uint8)
            if flag is not None:
                return cv2.imdecode(raw, flag)
            return cv2.cvtColor(cv2.imdecode(raw, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
        found['opencv-python-headless'] = opencv
    except ImportError:
        found['opencv-python-headless'] = None
    return found


def _jpeg(width: int, height: int, quality: int) -> bytes:
    rgb = make_frame(3, 'outdoor', width=width, height=height, beams=0).rgb
    buffer = io.BytesIO()
    Image.fromarray(rgb).save(buffer, format='JPEG', quality=quality)
    return buffer.getvalue()


def main() -> None:
    """Print the median decode time of each decoder for each size."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--repeats', type=int, default=50)
    parser.add_argument('--quality', type=int, default=95,
                        help="JPEG quality (compressed_image_transport's default is 95)")
    args = parser.parse_args()
    decoders = _decoders()
    for (width, height), target in TARGETS_MS.items():
        data = _jpeg(width, height, args.quality)
        reference = decoders['Pillow'](data)
        print(f'{width}×{height} JPEG q{args.quality}, {len(data)} bytes '
              f'(target ≤ {target:g} ms):')
        for name, fn in decoders.items():
            if fn is None:
                print(f'  {name:40s} not available')
                continue
            out = fn(data)
            diff = int(np.abs(out.astype(np.int16) - reference).max())
            times = []
            for _ in range(args.repeats):
                start = time.perf_counter()
                fn(data)
                times.append(time.perf_counter() - start)
            median = statistics.median(times) * 1e3
            print(f'  {name:40s} {median:7.2f} ms  (min {min(times) * 1e3:.2f}; max |Δ| vs '
                  f'Pillow {diff})  {"ok" if median <= target else "OVER TARGET"}')


if __name__ == '__main__':
    main()
