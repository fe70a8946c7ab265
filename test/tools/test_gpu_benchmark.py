"""The GPU measurement script: its table, its refusal without CUDA, and a tiny CPU run."""
from __future__ import annotations

import pytest
import torch

from panoptic_mapping.tools import gpu_benchmark


def test_the_table_says_which_targets_hold():
    numbers = {"ingest_ms_p50": 21.0, "loc_ms_p50": 12.0, "fastsam_ms": 30.0,
               "loc_with_fastsam_ms": 42.0, "train_steps_per_s": None, "train_steps": 0,
               "render_ms_per_view": 400.0, "peak_rss_mb": 900.0, "gpu_peak_mb": None,
               "PQ_scene": 0.9, "fastsam_note": "imgsz 640"}
    table = gpu_benchmark.format_table(numbers, "cpu", 640, 480)
    rows = {line.split(" | ")[0].lstrip("| "): line for line in table.splitlines()}
    assert rows["ingest p50 [ms]"].endswith("| <= 33 | yes |")
    assert rows["InstanceLoc p50 + FastSAM-s [ms]"].endswith("| <= 33 | no |")
    assert rows["training steps/s"].endswith("| - | >= 200 | - |")  # not measured
    assert "640x480" in table.splitlines()[0]


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_without_cuda_it_says_so_and_exits_2(capsys):
    assert gpu_benchmark.main(["--device", "cuda"]) == 2
    assert "no CUDA device" in capsys.readouterr().err


def test_a_tiny_cpu_run_prints_every_row(capsys):
    pytest.importorskip("pybullet", reason="pybullet renders the benchmark scenes")
    code = gpu_benchmark.main(["--device", "cpu", "--width", "64", "--height", "48",
                               "--frames", "3", "--novel-frames", "1", "--train-steps", "2",
                               "--skip-fastsam"])
    out = capsys.readouterr().out
    assert code == 0
    for _, label, _, _ in gpu_benchmark.TARGETS:
        assert label in out
    assert "| training steps | 2 |" in out
    assert "skipped (--skip-fastsam)" in out
