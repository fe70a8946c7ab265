"""How both executables run their node: logging, rclpy, the command-line check, a
multi-threaded executor, exit codes, and a clean shutdown."""
from __future__ import annotations

import faulthandler
import gc
import logging
import signal
import sys
import time
from typing import Callable

import rclpy
from rclpy import executors as _executors
from rclpy.executors import ExternalShutdownException, MultiThreadedExecutor

from panoptic_mapping.config import ConfigError
from panoptic_mapping.ros.parameters import check_command_line_params

__all__ = ["run_node", "PatientExecutor"]

# what wait_for_ready_callbacks raises when nothing is to be done this turn
_NOTHING_TO_DO = tuple(getattr(_executors, n) for n in (
    "ExternalShutdownException", "ShutdownException", "TimeoutException",
    "ConditionReachedException") if hasattr(_executors, n))


class PatientExecutor(MultiThreadedExecutor):
    """rclpy's MultiThreadedExecutor without its busy loop.

    rclpy hands a callback to its thread pool as a task and, until a pool thread starts
    it, yields the same task again on every turn and submits it to the pool again (rclpy
    issue 1223): while the pool threads are busy (a service call, a publisher waiting on
    the map) or the GIL is contended, the executor's thread loops. In a profile of the
    mapping node on this 2-core CPU it took 74 % of a core (10 % with this class). A task
    already in the pool is not submitted again; the executor pauses ``requeue_pause_s``.
    """

    def __init__(self, num_threads: int, requeue_pause_s: float = 0.002,
                 context=None) -> None:
        super().__init__(num_threads=num_threads, context=context)
        self.requeue_pause_s = float(requeue_pause_s)
        self.paused = 0  # turns that found only queued tasks (for tests and profiling)

    def _spin_once_impl(self, timeout_sec=None, wait_condition=lambda: False) -> None:
        try:
            handler, _, _ = self.wait_for_ready_callbacks(timeout_sec, None, wait_condition)
        except _NOTHING_TO_DO:
            return
        if handler in self._futures and not handler.done():
            self.paused += 1
            time.sleep(self.requeue_pause_s)  # a pool thread has it already
        else:
            self._executor.submit(handler)
            self._futures.append(handler)
        self._collect_finished()

    def _collect_finished(self) -> None:
        """Drop finished tasks, raising what one raised, unless the context has shut
        down: a callback cut off by the shutdown (a timer publishing as SIGINT invalidates
        its publisher's context) is part of stopping, not an error."""
        for future in self._futures[:]:
            if future.done():
                self._futures.remove(future)
                try:
                    future.result()
                except Exception:
                    if self.context.ok():
                        raise


def _executor(num_threads: int) -> MultiThreadedExecutor:
    """The patient executor where this rclpy has the internals it relies on."""
    executor = PatientExecutor(num_threads)
    if hasattr(executor, "_futures") and hasattr(executor, "_executor"):
        return executor
    executor.shutdown()
    return MultiThreadedExecutor(num_threads=num_threads)


def run_node(make_node: Callable[[], object], name: str, num_threads: int,
             argv: list[str] | None = None) -> int:
    """Build the node with ``make_node`` and spin it until SIGINT or an external shutdown.

    Returns:
        0 after a clean stop; 2 for a configuration error or a missing model file or
        package (the reason on stderr, prefixed with ``[name]``).
    """
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="[%(levelname)s] [%(name)s]: %(message)s")
    # `kill -USR1 <pid>` prints every thread's stack to stderr: what a hung node waits on
    try:
        faulthandler.register(signal.SIGUSR1, all_threads=True)
    except (OSError, ValueError, AttributeError):  # stderr without a file descriptor
        pass  # (io.UnsupportedOperation is both an OSError and a ValueError)
    args = sys.argv if argv is None else argv
    rclpy.init(args=args)
    node = None
    try:
        node = make_node()
        for warning in check_command_line_params(args, node.get_name(), node.config):
            node.get_logger().warning(warning)
        executor = _executor(num_threads)
        executor.add_node(node)
        # What start-up made (modules, models, the node) lives as long as the process:
        # out of the cyclic collector's sight. Collections are triggered by allocations
        # on any thread and stop every thread while they run; the executor allocates per
        # message, and under a 100 Hz camera its thread spent 21 % of the time collecting,
        # each pass walking every object start-up had made.
        gc.freeze()
        executor.spin()
    except ConfigError as exc:
        print(f"[{name}] configuration error: {exc}", file=sys.stderr)
        return 2
    except (FileNotFoundError, ImportError) as exc:  # model weights or packages missing
        print(f"[{name}] front-end error: {exc}", file=sys.stderr)
        return 2
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    except Exception:
        if rclpy.ok():
            raise
        # a callback cut off by the shutdown (the plain executor's path): stopping
    finally:
        if node is not None:
            node.destroy_node()
        if rclpy.ok():
            rclpy.try_shutdown()
    return 0
