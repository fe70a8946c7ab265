"""How both executables run their node: logging, rclpy, the command-line check, a
multi-threaded executor, exit codes, and a clean shutdown."""
from __future__ import annotations

import logging
import sys
from typing import Callable

import rclpy
from rclpy.executors import ExternalShutdownException, MultiThreadedExecutor

from panoptic_mapping.config import ConfigError
from panoptic_mapping.ros.parameters import check_command_line_params

__all__ = ["run_node"]


def run_node(make_node: Callable[[], object], name: str, num_threads: int,
             argv: list[str] | None = None) -> int:
    """Build the node with ``make_node`` and spin it until SIGINT or an external shutdown.

    Returns:
        0 after a clean stop; 2 for a configuration error or a missing model file or
        package (the reason on stderr, prefixed with ``[name]``).
    """
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="[%(levelname)s] [%(name)s]: %(message)s")
    args = sys.argv if argv is None else argv
    rclpy.init(args=args)
    node = None
    try:
        node = make_node()
        for warning in check_command_line_params(args, node.get_name(), node.config):
            node.get_logger().warning(warning)
        executor = MultiThreadedExecutor(num_threads=num_threads)
        executor.add_node(node)
        executor.spin()
    except ConfigError as exc:
        print(f"[{name}] configuration error: {exc}", file=sys.stderr)
        return 2
    except (FileNotFoundError, ImportError) as exc:  # model weights or packages missing
        print(f"[{name}] front-end error: {exc}", file=sys.stderr)
        return 2
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        if node is not None:
            node.destroy_node()
        if rclpy.ok():
            rclpy.try_shutdown()
    return 0
