"""Eight seeded SIGKILLs of the whole process group (benchmarks/crash_probe.py, short): half
aimed inside register, promote and the model card, half uniform over train, tune and score.
After each, a run with the same arguments; then every invariant of the harness holds."""

from __future__ import annotations

import os

import pytest

from benchmarks.crash_probe import REGISTRY_STEPS, CrashProbe, draw_points, format_table

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("prefect_server")]


def test_eight_seeded_kills_leave_every_invariant_holding(workspace):
    import prefect.settings

    env = {**os.environ, "PREFECT_API_URL": prefect.settings.PREFECT_API_URL.value()}
    probe = CrashProbe(workspace, env, rows=1500, score_rows=20_000)
    probe.measure()
    points = draw_points(8, seed=28)
    assert sum(p.aim is not None for p in points) == 4 and {p.command for p in points} == {"train", "tune", "score"}
    outcomes = [probe.run_point(point) for point in points]
    table = format_table(outcomes)
    print(table)
    assert [o.failures for o in outcomes] == [[]] * 8, table
    assert any(o.landed in REGISTRY_STEPS for o in outcomes if o.point.aim), table  # the aim reaches the registry
