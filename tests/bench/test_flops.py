"""Every slow* row of SPEC section 3 (paper Tables 2, 3, 6a, 6d), within 3%.

The paper's numbers are written out here on purpose (not imported from sfc_deploy.bench.paper)
so that a wrong figure in the package cannot make its own test pass.
"""

import math

import pytest
import torch

import sfc_deploy
from sfc_deploy.bench.flops import dense_cost, sfc_cost
from sfc_deploy.models import get_config

TOL = 0.03


def _sfc(backbone="slow8x8", **kw):
    with torch.device("meta"):
        model = sfc_deploy.create_model(backbone, **kw)
    frames = math.ceil(288 / get_config(backbone).stride)
    return sfc_cost(model, frames=frames, size=(256, 312)), model


@pytest.mark.parametrize(
    ("backbone", "dense_gmacs", "sfc_gmacs"),
    [("slow8x8", 1643, 247), ("slow16x4", 3285, 494), ("slow32x2", 6570, 988)],
)
def test_table2_dense_and_sfc(backbone, dense_gmacs, sfc_gmacs):
    sfc, model = _sfc(backbone)
    assert sfc.gmacs == pytest.approx(sfc_gmacs, rel=TOL)
    assert dense_cost(model).gmacs == pytest.approx(dense_gmacs, rel=TOL)
    assert sfc.params_m == pytest.approx(35.9, rel=TOL)
    assert dense_cost(model).params_m == pytest.approx(32.5, rel=TOL)


@pytest.mark.parametrize(("tau", "gmacs"), [(1, 352), (4 / 3, 299), (2, 247), (4, 195)])
def test_table3_tau(tau, gmacs):
    assert _sfc(tau=tau)[0].gmacs == pytest.approx(gmacs, rel=TOL)


@pytest.mark.parametrize(("split", "gmacs"), [("res4", 305), ("res3", 247), ("res2", 211), ("stem", 163)])
def test_table6a_split(split, gmacs):
    assert _sfc(split=split)[0].gmacs == pytest.approx(gmacs, rel=TOL)


@pytest.mark.parametrize(("kernel", "gmacs", "params"), [("3x3x3", 356, 48.52), ("3x1x1", 247, 35.93), ("1x1x1", 238, 34.89)])
def test_table6d_theta_kernel(kernel, gmacs, params):
    cost, _ = _sfc(theta_kernel=kernel)
    assert cost.gmacs == pytest.approx(gmacs, rel=TOL)
    assert cost.params_m == pytest.approx(params, rel=TOL)


def test_counter_counts_what_runs_on_a_real_forward():
    """The meta-device count equals a count on real tensors (tiny model)."""
    from sfc_deploy.bench.flops import count_macs

    model = sfc_deploy.create_model("slow8x8_tiny", num_classes=3)
    video = torch.randn(1, 3, 12, 32, 40)
    with torch.no_grad():
        real = count_macs(model, video)
    cost = sfc_cost(model, frames=12, size=(32, 40))
    assert cost.gmacs * 1e9 == pytest.approx(real, rel=1e-9)
    # and it grows with video length, as the work does
    assert sfc_cost(model, frames=24, size=(32, 40)).gmacs > 1.8 * cost.gmacs
