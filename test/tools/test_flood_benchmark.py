"""The flood benchmark's bookkeeping (the runs themselves need the installed node: BENCHMARKS.md)."""
from __future__ import annotations

from panoptic_mapping.tools.flood_benchmark import Phase, _table


def _phase(statuses: list[dict]) -> dict:
    phase = Phase()
    phase.t0, phase.localize_s = 0.0, [0.1, 0.2]
    for values in statuses:
        phase.on_status(values)
    phase.t1 = 3.0
    return phase.summary()


def test_cpu_by_thread_is_averaged_over_the_phase_and_tabled():
    idle = _phase([{"training.steps": "0", "cpu.training-worker_pct": "40.0",
                    "cpu.native_pct": "10.0", "cpu.process_pct": "50.0"},
                   {"training.steps": "8", "cpu.training-worker_pct": "60.0",
                    "cpu.native_pct": "30.0", "cpu.process_pct": "90.0"}])
    flood = _phase([{"training.steps": "0", "cpu.training-worker_pct": "20.0",
                     "cpu.process_pct": "150.0", "cpu.frontend-worker_pct": "70.0"}])
    assert idle["cpu_training-worker_pct"] == 50.0 and idle["cpu_native_pct"] == 20.0
    table = _table(idle, flood, 100.0)
    assert "| node CPU, training-worker [% of a core, mean] | 50 | 20 |" in table
    assert "| node CPU, frontend-worker [% of a core, mean] | nan | 70 |" in table  # idle: none
    assert "| node CPU, process [% of a core, mean] | 70 | 150 |" in table
