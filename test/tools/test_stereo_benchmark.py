"""The stereo benchmark runs end to end on a tiny rendered scene and prints its table."""
from __future__ import annotations

import pytest

pytest.importorskip("pybullet", reason="pybullet renders the benchmark scenes")

from panoptic_mapping.tools import stereo_benchmark  # noqa: E402


def test_stereo_benchmark_prints_errors_and_kept_shares(capsys):
    assert stereo_benchmark.main(["--width", "48", "--height", "36", "--references", "2",
                                  "--sources", "2"]) == 0
    out = capsys.readouterr().out
    for row in ("all ", "confident ", "consistent ", "pixels kept", "seconds per reference"):
        assert row in out, row
