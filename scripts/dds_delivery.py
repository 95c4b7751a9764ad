"""Count how many large images cross from one process to another over DDS.

Usage:
    python scripts/dds_delivery.py [--count 20] [--rate 10] [--mb 1.4] [--reliability best_effort]
        [--profile config/fastdds_shm.xml]

Runs a subscriber in a child process and publishes `count` images of about `mb` MB at
`rate` Hz from this one, then prints how many arrived. Run it with and without
`--profile config/fastdds_shm.xml` to see what the profile changes. The profile is set under
both names Fast DDS reads: FASTRTPS_DEFAULT_PROFILES_FILE (Fast DDS 2.x: Humble, Jazzy) and
FASTDDS_DEFAULT_PROFILES_FILE (Fast DDS 3: Kilted, which deprecates the old name). Both
processes run on a private domain id (densepred_ros.domain_ids).
"""

import argparse
import os
from pathlib import Path
import subprocess
import sys
import time

PROFILE_VARIABLES = ('FASTRTPS_DEFAULT_PROFILES_FILE', 'FASTDDS_DEFAULT_PROFILES_FILE')


def _qos(reliability: str):
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    policy = (ReliabilityPolicy.RELIABLE if reliability == 'reliable'
              else ReliabilityPolicy.BEST_EFFORT)
    return QoSProfile(depth=10, reliability=policy)


def subscriber(reliability: str, expected: int, timeout: float) -> int:
    """Count images on /dds_delivery until `expected` arrived or `timeout` passed."""
    import rclpy
    from sensor_msgs.msg import Image
    rclpy.init()
    node = rclpy.create_node('dds_delivery_sub')
    received = []
    node.create_subscription(Image, 'dds_delivery', lambda m: received.append(m.height),
                             _qos(reliability))
    print('ready', flush=True)
    deadline = time.monotonic() + timeout
    while rclpy.ok() and time.monotonic() < deadline and len(received) < expected:
        rclpy.spin_once(node, timeout_sec=0.1)
    print(f'received {len(received)}', flush=True)
    node.destroy_node()
    rclpy.try_shutdown()
    return 0


def publisher(args: argparse.Namespace) -> int:
    """Start the subscriber process, publish, and report the count."""
    import rclpy
    from sensor_msgs.msg import Image
    child = subprocess.Popen(
        [sys.executable, __file__, '--role', 'sub', '--count', str(args.count),
         '--reliability', args.reliability, '--timeout', str(args.count / args.rate + 10)],
        stdout=subprocess.PIPE, text=True)
    assert child.stdout.readline().strip() == 'ready'
    rclpy.init()
    node = rclpy.create_node('dds_delivery_pub')
    pub = node.create_publisher(Image, 'dds_delivery', _qos(args.reliability))
    deadline = time.monotonic() + 10.0
    while pub.get_subscription_count() == 0 and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.5)
    width = 640
    height = int(args.mb * 1e6 / (width * 3))
    msg = Image(height=height, width=width, encoding='rgb8', step=width * 3)
    msg.data = bytes(width * 3 * height)
    for _ in range(args.count):
        pub.publish(msg)
        time.sleep(1.0 / args.rate)
    output = child.communicate(timeout=60)[0]
    node.destroy_node()
    rclpy.try_shutdown()
    profile = next((os.environ[v] for v in PROFILE_VARIABLES if os.environ.get(v)),
                   'default transports')
    print(f'{args.reliability}, {width}x{height} rgb8 ({args.mb} MB) at {args.rate} Hz, '
          f'profile: {profile}: {output.strip().split()[-1]} of {args.count} arrived')
    return 0


def main() -> int:
    """Parse the options and run one role."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--role', default='pub', choices=['pub', 'sub'])
    parser.add_argument('--count', type=int, default=20)
    parser.add_argument('--rate', type=float, default=10.0)
    parser.add_argument('--mb', type=float, default=1.4)
    parser.add_argument('--reliability', default='best_effort',
                        choices=['best_effort', 'reliable'])
    parser.add_argument('--timeout', type=float, default=30.0)
    parser.add_argument('--profile', default='',
                        help='Fast DDS XML profile for both processes (sets both variables)')
    args = parser.parse_args()
    if args.role == 'sub':
        return subscriber(args.reliability, args.count, args.timeout)
    if args.profile:
        os.environ['RMW_IMPLEMENTATION'] = 'rmw_fastrtps_cpp'
        for variable in PROFILE_VARIABLES:
            os.environ[variable] = str(Path(args.profile).resolve())
    if 'ROS_DOMAIN_ID' not in os.environ:
        from densepred_ros.domain_ids import reserve_domain_id
        os.environ['ROS_DOMAIN_ID'] = str(reserve_domain_id())  # the child inherits it
    return publisher(args)


if __name__ == '__main__':
    sys.exit(main())
