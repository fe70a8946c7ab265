"""The endurance benchmark: its verdicts on windows with known answers, and a tiny replay
through the core end to end."""
from __future__ import annotations

import json

import pytest

from panoptic_mapping.bench.runner import parse_mapper_settings
from panoptic_mapping.tools.endurance_benchmark import Window, main, verdicts


def window(last: int, rss: float, p50: float, full: bool = False) -> Window:
    return Window(last, rss, p50, 2 * p50, 10, 100.0 if full else 50.0, full, 5, 1000)


def test_verdicts_start_at_the_steady_state_and_compare_with_it():
    # exploring (memory grows by right), then the loop seen at frame 199: flat
    ws = [window(99, 800, 100), window(199, 900, 110), window(299, 930, 120),
          window(399, 960, 125)]
    v = verdicts(ws, seen_at_frame=199)
    assert v["steady_from_frame"] == 199
    assert v["rss_growth"] == pytest.approx(60 / 900) and v["rss_flat"]
    assert v["latency_ratio"] == pytest.approx(125 / 110) and v["latency_flat"]
    # a leak: the highest memory after the steady state counts, not the last
    ws[2] = window(299, 1000, 120)
    assert verdicts(ws, seen_at_frame=199)["rss_flat"] is False
    # a latency that keeps growing
    ws[3] = window(399, 960, 140)
    assert verdicts(ws, seen_at_frame=199, latency_tolerance=1.25)["latency_flat"] is False
    # replayed loops: the last loop against the second, whatever the windows say
    v = verdicts(ws, seen_at_frame=199, loop_p50_ms=[150.0, 100.0, 104.0, 110.0])
    assert v["latency_ratio"] == pytest.approx(1.1) and v["latency_flat"]
    # a full keyframe buffer starts the steady state earlier
    ws[0] = window(99, 800, 100, full=True)
    assert verdicts(ws, seen_at_frame=199)["steady_from_frame"] == 99


def test_no_steady_state_gives_no_verdict():
    v = verdicts([window(99, 800, 100), window(199, 900, 110)], seen_at_frame=None)
    assert v["steady_from_frame"] is None and v["rss_flat"] is None


def test_settings_parse_as_yaml_and_refuse_a_missing_value():
    assert parse_mapper_settings(["keyframes.budget_mb=2", "instances.voxel_m=0.02"]) == {
        "keyframes.budget_mb": 2, "instances.voxel_m": 0.02}
    with pytest.raises(ValueError, match="KEY=VALUE"):
        parse_mapper_settings(["keyframes.budget_mb"])


@pytest.mark.parametrize("argv", [["--frames", "1"], ["--window", "0"], ["--loops", "0"],
                                  ["--frames", "4", "--loops", "2", "--window", "9"]])
def test_arguments_that_cannot_make_a_run_are_refused(argv):
    with pytest.raises(SystemExit):
        main(argv)


def test_a_tiny_replay_runs_end_to_end(tmp_path, capsys):
    out = tmp_path / "e.json"
    assert main(["--scene", "tabletop", "--trajectory", "orbit", "--frames", "6",
                 "--loops", "2", "--window", "3", "--width", "48", "--height", "36",
                 "--train-steps-per-frame", "0", "--json", str(out)]) == 0
    record = json.loads(out.read_text())
    assert [w["last_frame"] for w in record["windows"]] == [2, 5, 8, 11]
    assert record["frames"] == 12 and record["steady_from_frame"] == 5
    assert all(w["rss_mb"] > 0 and w["instance_voxels"] > 0 for w in record["windows"])
    assert len(record["loop_ingest_ms_p50"]) == 2
    assert "ingest p50 last / first window" in capsys.readouterr().out
