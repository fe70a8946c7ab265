"""The node's executor: rclpy's MultiThreadedExecutor without its busy loop."""
from __future__ import annotations

import threading
import time


def test_a_callback_waiting_for_a_pool_thread_does_not_spin_the_executor(rclpy_context):
    """One pool thread, busy in a slow callback (a service call waiting on the map); a
    second timer's callback is queued behind it. rclpy yields a queued task again on every
    turn until a pool thread starts it, and its executor submits it again each time
    (rclpy issue 1223; 30 submissions in this scenario against 6; in the mapping node
    under load its thread took 74 % of a core). The patient executor submits each task
    once and pauses on such turns; every callback still runs."""
    import rclpy
    from rclpy.callback_groups import ReentrantCallbackGroup

    from panoptic_mapping.ros.spin import PatientExecutor

    node = rclpy.create_node("spin_probe", context=rclpy_context)
    group = ReentrantCallbackGroup()
    ran = {"slow": 0, "quick": 0}

    def slow():
        ran["slow"] += 1
        time.sleep(0.4)

    def quick():
        ran["quick"] += 1

    node.create_timer(0.05, slow, callback_group=group)
    node.create_timer(0.05, quick, callback_group=group)
    executor = PatientExecutor(num_threads=1, requeue_pause_s=0.002, context=rclpy_context)
    executor.add_node(node)
    submitted = []
    submit = executor._executor.submit
    # the tasks themselves: holding them keeps a finished task's id from being reused
    executor._executor.submit = lambda task, *a: (submitted.append(task), submit(task, *a))[1]
    stop = threading.Event()

    def spin():
        while not stop.is_set():
            executor.spin_once(timeout_sec=0.1)

    spinner = threading.Thread(target=spin, daemon=True)
    spinner.start()
    time.sleep(1.0)
    stop.set()
    spinner.join(5)
    executor.shutdown()
    node.destroy_node()
    assert executor.paused > 0  # the queued-task turn happened, and waited
    assert len(submitted) == len({id(t) for t in submitted}), "a task was submitted again"
    assert ran["slow"] >= 2 and ran["quick"] >= 1  # both callbacks still run


class _Failed:
    """A finished task that raised (a timer publishing on a context shut down under it)."""

    def done(self) -> bool:
        return True

    def result(self):
        raise RuntimeError("Failed to publish: publisher's context is invalid")


def test_a_callback_cut_off_by_the_shutdown_is_no_error(rclpy_context):
    """SIGINT shuts the context down while a timer may be publishing: rclpy raises in that
    callback, and the executor re-raised it from spin, so every such shutdown printed a
    traceback and exited 1 (seen in the flood test). A task failing while the context is
    up still raises."""
    import pytest

    from panoptic_mapping.ros.spin import PatientExecutor

    executor = PatientExecutor(num_threads=1, context=rclpy_context)
    executor._futures.append(_Failed())
    with pytest.raises(RuntimeError, match="context is invalid"):
        executor._collect_finished()
    assert not executor._futures
    executor._futures.append(_Failed())
    rclpy_context.try_shutdown()
    executor._collect_finished()  # no raise: part of stopping
    assert not executor._futures
    executor.shutdown()
