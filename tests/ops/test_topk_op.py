import numpy as np
import pytest
import torch

from sfc_deploy.ops import topk_temporal_indices, topk_temporal_pool_reference


def _op(x, k):
    return torch.ops.sfc.topk_temporal_pool(x, k)


@pytest.mark.parametrize("k", [1, 3, 7, 9])
def test_matches_reference_on_random_data(k):
    x = torch.randn(2, 3, 9, 4, 5)
    np.testing.assert_array_equal(_op(x, k).numpy(), topk_temporal_pool_reference(x.numpy(), k))


def test_ties_go_to_the_lower_index_and_order_is_temporal():
    # time series 1, 5, 5, 2, 5, 0 -> the three largest are the 5s at t=1, 2, 4.
    # With k=2 the tie among three 5s keeps t=1 and t=2.
    series = torch.tensor([1.0, 5.0, 5.0, 2.0, 5.0, 0.0]).reshape(1, 1, 6, 1, 1)
    assert topk_temporal_indices(series, 2).flatten().tolist() == [1, 2]
    assert _op(series, 4).flatten().tolist() == [5.0, 5.0, 2.0, 5.0]
    tied = torch.randint(0, 3, (2, 4, 12, 3, 3)).float()
    np.testing.assert_array_equal(_op(tied, 5).numpy(), topk_temporal_pool_reference(tied.numpy(), 5))


def test_reference_is_not_a_copy_of_the_torch_path():
    # A selection that forgets to restore temporal order must disagree with the oracle.
    x = torch.tensor([0.0, 2.0, 1.0, 3.0]).reshape(1, 1, 4, 1, 1)
    sorted_by_value = torch.topk(x, 2, dim=2).values
    assert not np.array_equal(sorted_by_value.numpy(), topk_temporal_pool_reference(x.numpy(), 2))
    assert topk_temporal_pool_reference(x.numpy(), 2).flatten().tolist() == [2.0, 3.0]


def test_gradcheck_routes_gradient_to_selected_elements():
    x = torch.randn(1, 2, 6, 2, 2, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: _op(t, 3), (x,))
    _op(x, 3).sum().backward()
    assert x.grad.sum().item() == pytest.approx(1 * 2 * 3 * 2 * 2)
    assert set(x.grad.unique().tolist()) == {0.0, 1.0}


def test_bad_k_is_refused():
    with pytest.raises(RuntimeError, match="exceeds the time axis"):
        _op(torch.randn(1, 1, 3, 1, 1), 4)


def test_torch_export_keeps_one_custom_node_with_dynamic_time():
    class M(torch.nn.Module):
        def forward(self, x):
            return _op(x, x.shape[2] // 2) * 2

    x = torch.randn(1, 2, 8, 3, 3)
    t = torch.export.Dim("t", min=4, max=512)
    ep = torch.export.export(M(), (x,), dynamic_shapes={"x": {2: t}})
    targets = [n.target for n in ep.graph.nodes if n.op == "call_function"]
    assert torch.ops.sfc.topk_temporal_pool.default in targets
    y = torch.randn(1, 2, 14, 3, 3)
    np.testing.assert_array_equal(ep.module()(y).numpy(), 2 * topk_temporal_pool_reference(y.numpy(), 7))


@pytest.mark.parametrize("layout", ["contiguous", "channels_last_3d", "time_slice"])
def test_every_memory_layout_gives_the_reference_bit_for_bit_in_the_fakes_strides(layout):
    # ReLU-like features: many tied zeros, of both signs; the op sorts rows copied time-last
    g = torch.Generator().manual_seed(3)
    x = torch.randint(-2, 4, (2, 6, 14, 3, 4), generator=g).float().clamp(min=0)
    x[:, ::2] *= -1  # -0.0 where the value was 0
    if layout == "channels_last_3d":
        x = x.contiguous(memory_format=torch.channels_last_3d)
    elif layout == "time_slice":
        x = x[:, :, 1:12]
    ref = topk_temporal_pool_reference(x.numpy(), 5)
    for out in (_op(x, 5), torch.gather(x, 2, topk_temporal_indices(x, 5))):
        np.testing.assert_array_equal(out.numpy().view(np.int32), ref.view(np.int32))
        assert out.is_contiguous()  # the strides register_fake promises compiled graphs
