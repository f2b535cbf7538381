"""The scale campaign's fast subset (bench/campaign.py --quick): 8 ranks on 2 cores.

heat2d, map/reduce under every schedule, keyed shuffles with and without a budget, a
checkpoint chain 8 -> 7 -> 5 ranks and a node loss with 4 emulated nodes all give the
1-rank answer (the campaign compares sha256 digests and exits 1 on any difference).
"""

import subprocess
import sys

import pytest

from tests.conftest import ROOT

pytestmark = pytest.mark.timeout(400)


def test_campaign_at_8_ranks_agrees_with_1_rank():
    out = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "campaign.py"), "--quick"],
        capture_output=True,
        text=True,
        timeout=380,
        cwd=ROOT,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert "all 6 cases agree with 1 rank" in out.stdout, out.stdout
    for case in ("heat2d", "map/reduce", "checkpoint 8->7->5", "node-local, 4 nodes, kill"):
        assert f"| {case}" in out.stdout, case
