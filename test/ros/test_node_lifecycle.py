"""The mapping node as a managed (lifecycle) node, driven over loopback as a lifecycle
manager would: unconfigured -> configure -> activate (maps) -> deactivate (the map kept,
its services answer, input ignored) -> activate (maps on) -> cleanup (freed)."""
from __future__ import annotations

import re
import subprocess
import time

import pytest

from conftest import ANY_STAMP, PARAMS_FILE, REPLAY_EXECUTABLE, require_interfaces

pytestmark = pytest.mark.ros
require_interfaces()

import rclpy  # noqa: E402
from lifecycle_msgs.msg import State, Transition  # noqa: E402
from lifecycle_msgs.srv import ChangeState, GetState  # noqa: E402

from node_client import wait_until  # noqa: E402
from panoptic_mapping.bench.scenes import save_scene  # noqa: E402
from panoptic_mapping.tools.demo_client import Client  # noqa: E402
from panoptic_mapping_interfaces.srv import SaveMap  # noqa: E402

NS = "/panoptic_mapping"


def _state(client: Client) -> int:
    return client.call(GetState, "get_state", GetState.Request()).current_state.id


def _transition(client: Client, transition: int) -> None:
    response = client.call(ChangeState, "change_state",
                           ChangeState.Request(transition=Transition(id=transition)))
    assert response.success, transition


def _replay(folder, wait_subscribers: float = 20.0) -> None:
    replay = subprocess.run([str(REPLAY_EXECUTABLE), str(folder), "--rate", "0.2",
                             "--stamps", "recorded", "--wait-subscribers",
                             str(wait_subscribers)], capture_output=True, text=True,
                            timeout=120)
    assert replay.returncode == 0, replay.stdout + replay.stderr


def _saved_keyframes(client: Client, path) -> int:
    response = client.call(SaveMap, "save_map", SaveMap.Request(path=str(path)))
    assert response.success, response.message
    return int(re.match(r"saved (\d+) keyframes", response.message).group(1))


def test_lifecycle_transitions_keep_and_free_the_map(start_node, tabletop_scene, tmp_path):
    folder = save_scene(tabletop_scene, tmp_path / "scene")
    node = start_node("--ros-args", "--params-file", str(PARAMS_FILE),
                      "-p", "lifecycle.autostart:=false", "-p", "input.pose_source:=pose",
                      *ANY_STAMP,
                      "-p", "output.status_period_s:=0.5",
                      "-p", "mapping.trainer.rays_per_step:=64",
                      "-p", "input.train_duty_cycle:=0.3")
    node.wait_for_line("unconfigured: waiting for the lifecycle transitions")
    rclpy.init()
    client = Client(NS)
    try:
        assert _state(client) == State.PRIMARY_STATE_UNCONFIGURED
        assert not client.node.get_publishers_info_by_topic(f"{NS}/labeled_cloud")
        _transition(client, Transition.TRANSITION_CONFIGURE)
        assert _state(client) == State.PRIMARY_STATE_INACTIVE
        node.wait_for_line("configured: front-end")
        assert "started:" not in node.output  # inactive: no input, no timers
        assert client.node.get_publishers_info_by_topic(f"{NS}/labeled_cloud")

        _transition(client, Transition.TRANSITION_ACTIVATE)
        assert _state(client) == State.PRIMARY_STATE_ACTIVE
        _replay(folder)
        wait_until(client, lambda: int(client.status.get("frames.mapped", 0)) >= 2, 60,
                   "frames to be mapped while active")

        _transition(client, Transition.TRANSITION_DEACTIVATE)
        assert _state(client) == State.PRIMARY_STATE_INACTIVE
        node.wait_for_line("deactivated: input and training stopped, the map kept")
        kept = _saved_keyframes(client, tmp_path / "inactive.pt")
        assert kept >= 2  # the map and its services outlive deactivate
        _replay(folder, wait_subscribers=1.0)  # nobody listens: nothing is mapped
        time.sleep(1.0)
        assert _saved_keyframes(client, tmp_path / "inactive2.pt") == kept

        _transition(client, Transition.TRANSITION_ACTIVATE)
        # the front-end worker logs its start from its own thread, after the transition
        # has answered (a fresh-clone CI run read the output before it came)
        node.wait_for_count("started:", 2)
        time.sleep(0.5)
        assert node.output.count("started:") == 2  # once per activation, not more
        _transition(client, Transition.TRANSITION_DEACTIVATE)
        _transition(client, Transition.TRANSITION_CLEANUP)
        assert _state(client) == State.PRIMARY_STATE_UNCONFIGURED
        node.wait_for_line("cleaned up: map and models freed")

        def services() -> list[str]:
            return [name for name, _ in client.node.get_service_names_and_types_by_node(
                "panoptic_mapping", "/")]

        wait_until(client, lambda: f"{NS}/save_map" not in services(), 10,
                   "the map's services to go with cleanup")
        assert f"{NS}/get_state" in services()  # the lifecycle services stay
    finally:
        client.close()
        rclpy.try_shutdown()
    assert node.interrupt() == 0, node.output
    assert "Traceback" not in node.output, node.output


def test_sigusr1_prints_every_threads_stack_and_the_node_keeps_running(start_node):
    """`kill -USR1` on a hung node shows what each thread waits on (faulthandler)."""
    import signal

    node = start_node("--ros-args", "--params-file", str(PARAMS_FILE),
                      "-p", "lifecycle.autostart:=false")
    node.wait_for_line("unconfigured: waiting for the lifecycle transitions")
    node.proc.send_signal(signal.SIGUSR1)
    node.wait_for_line(r"[Tt]hread 0x[0-9a-f]+ \(most recent call first\)", regex=True)
    assert node.proc.poll() is None  # a report, not a stop
    assert node.interrupt() == 0, node.output
