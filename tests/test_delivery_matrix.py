"""No silent loss, over combinations of ackPolicy, mode, queue group, DLQ, retry and faults.

The fast slice runs in the default suite; the whole sweep is marked slow (and
still run by .ci/run). See tests/delivery_matrix.py for the invariant.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest

from jsnb.server import NatsServer
from tests.delivery_matrix import Case, Report, fast_slice, full_sweep, restart_sweep, run_case


@pytest.fixture(scope="module")
def matrix_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NatsServer]:
    """A server for this module alone: the consumer-lost fault restarts it."""
    store: Path = tmp_path_factory.mktemp("matrix-store")
    with NatsServer(store_dir=store) as server:
        yield server


def _verdict(report: Report) -> None:
    case = report.case
    if case.ack_policy == "all" and case.group:
        # Cannot be made safe: one member's cumulative ack would cover another's failure.
        assert report.refused and "ackPolicy" in report.refused
        assert "queueGroupName" in report.refused
        return
    assert report.refused is None, f"{case.id} refused: {report.refused}"
    assert not report.violations, f"{case.id}: {report.violations} (outcomes {report.outcomes})"


@pytest.mark.parametrize("case", fast_slice(), ids=lambda c: c.id)
async def test_no_silent_loss(matrix_server: NatsServer, case: Case) -> None:
    _verdict(await run_case(matrix_server, case))


@pytest.mark.slow
@pytest.mark.timeout(900)
async def test_no_silent_loss_full_sweep(matrix_server: NatsServer) -> None:
    cases = list(full_sweep())
    failures: list[str] = []
    # Cases use their own streams and consumers, so a few run at once.
    for start in range(0, len(cases), 6):
        reports = await asyncio.gather(
            *(run_case(matrix_server, c) for c in cases[start : start + 6])
        )
        for report in reports:
            try:
                _verdict(report)
            except AssertionError as exc:
                failures.append(str(exc))
    for case in restart_sweep():  # restarts the server: one at a time
        try:
            _verdict(await run_case(matrix_server, case))
        except AssertionError as exc:
            failures.append(str(exc))
    assert not failures, f"{len(failures)} of {len(cases) + 9} combinations:\n" + "\n".join(
        failures
    )
