"""DSTFuse network: shapes for any H x W, value range, device/dtype following, input checks."""

from __future__ import annotations

import pytest
import torch

from dstfuse_stream import DSTFuse, DSTFuseConfig, get_config
from dstfuse_stream.errors import ConfigError, InputShapeError
from dstfuse_stream.model import SobelMagnitude, pad_to_multiple, sobel_magnitude


@pytest.mark.parametrize("shape", [(1, 1, 97, 131), (2, 1, 64, 48), (1, 1, 1, 1), (1, 1, 3, 5), (1, 1, 130, 97)])
def test_forward_any_size(lite_model, shape):
    torch.manual_seed(1)
    ir, vis = torch.rand(shape), torch.rand(shape)
    with torch.inference_mode():
        fused = lite_model(ir, vis)
    assert fused.shape == shape
    assert fused.dtype == torch.float32
    assert float(fused.min()) >= 0.0 and float(fused.max()) <= 1.0


def test_paper_preset_is_the_published_topology():
    model = DSTFuse(get_config("paper"))
    convs = [m for m in model.fusion.modules() if isinstance(m, torch.nn.Conv2d) and m.kernel_size == (5, 5)]
    assert {c.out_channels for c in convs} >= {32, 64, 128}
    # 3 EBlocks (inblock, down1, down2) + 2 DBlocks + OutBlock, 3 residual blocks each
    assert len(model.fusion.inblock) == 1 + 3
    assert len(model.fusion.trunk.up1) == 3 + 1
    ir = torch.rand(1, 1, 37, 53)
    with torch.inference_mode():
        assert model.eval()(ir, ir).shape == (1, 1, 37, 53)


def test_batch_items_are_independent(lite_model):
    torch.manual_seed(2)
    ir, vis = torch.rand(3, 1, 40, 44), torch.rand(3, 1, 40, 44)
    with torch.inference_mode():
        batched = lite_model(ir, vis)
        single = lite_model(ir[1:2], vis[1:2])
    torch.testing.assert_close(batched[1:2], single, atol=1e-5, rtol=0)


def test_cropped_output_matches_padded_input_region(lite_model):
    """Padding to a multiple of 4 is by replication, so a multiple-of-4 input equal to the padded one gives the same pixels."""
    torch.manual_seed(3)
    ir, vis = torch.rand(1, 1, 30, 42), torch.rand(1, 1, 30, 42)
    with torch.inference_mode():
        odd = lite_model(ir, vis)
        padded = lite_model(pad_to_multiple(ir), pad_to_multiple(vis))
    assert padded.shape == (1, 1, 32, 44)
    torch.testing.assert_close(odd, padded[..., :30, :42], atol=1e-6, rtol=0)


def test_float64_follows_input(lite_model):
    model = lite_model.double()
    x = torch.rand(1, 1, 16, 16, dtype=torch.float64)
    with torch.inference_mode():
        assert model(x, x).dtype == torch.float64


@pytest.mark.parametrize(
    ("ir", "vis", "match"),
    [
        (torch.rand(1, 3, 8, 8), torch.rand(1, 3, 8, 8), r"ir: expected shape \(B, 1, H, W\), got \(1, 3, 8, 8\)"),
        (torch.rand(8, 8), torch.rand(8, 8), r"ir: expected shape \(B, 1, H, W\), got \(8, 8\)"),
        (torch.rand(1, 1, 8, 8), torch.rand(1, 1, 8, 9), r"ir and vis: expected the same shape"),
        (torch.zeros(1, 1, 8, 8, dtype=torch.uint8), torch.zeros(1, 1, 8, 8), r"ir: expected a floating dtype"),
        (torch.rand(1, 1, 8, 8), "not a tensor", r"vis: expected a torch.Tensor"),
    ],
)
def test_bad_input_names_the_input(lite_model, ir, vis, match):
    with pytest.raises(InputShapeError, match=match):
        lite_model(ir, vis)


def test_sobel_magnitude_hand_values():
    # constant -> exactly 0 (replicated borders add no edge)
    assert torch.count_nonzero(sobel_magnitude(torch.full((1, 1, 5, 5), 0.75))) == 0
    # unit vertical step between columns 2 and 3: |Gx| = (1 + 2 + 1) / 8 = 0.5 on the two columns beside it
    step = torch.zeros(1, 1, 4, 6)
    step[..., 3:] = 1.0
    out = sobel_magnitude(step)
    expected = torch.zeros(1, 1, 4, 6)
    expected[..., 2:4] = 0.5
    torch.testing.assert_close(out, expected)
    # the module form keeps its kernels as a buffer (moves with .to()) but not in the state_dict
    module = SobelMagnitude()
    assert "kernels" in dict(module.named_buffers()) and "kernels" not in module.state_dict()
    torch.testing.assert_close(module(step), expected)


def test_untrained_residual_blocks_start_at_identity():
    """sigmoid(d + logit(x)) with d = 0 returns x: zeroing the last conv of the fusion decoder reconstructs the input."""
    torch.manual_seed(4)
    model = DSTFuse(get_config("lite")).eval()
    last = model.fusion.trunk.out[-1][0]
    torch.nn.init.zeros_(last.weight)
    torch.nn.init.zeros_(last.bias)
    x = torch.rand(1, 1, 16, 20) * 0.98 + 0.01
    with torch.inference_mode():
        torch.testing.assert_close(model.fusion.reconstruct(x), x, atol=1e-6, rtol=0)


def test_cst_returns_two_stages_and_uses_ir_edges(lite_model):
    torch.manual_seed(5)
    vis = torch.rand(1, 1, 24, 24)
    ir_a, ir_b = torch.rand(1, 1, 24, 24), torch.rand(1, 1, 24, 24)
    with torch.inference_mode():
        out_a = lite_model.cst(ir_a, vis)
        out_b = lite_model.cst(ir_b, vis)
    assert out_a.stage1.shape == out_a.stage2.shape == (1, 1, 24, 24)
    assert not torch.equal(out_a.stage1, out_b.stage1)  # stage 1 sees S(I)


def test_config_validation_and_roundtrip():
    cfg = get_config("lite")
    assert DSTFuseConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ConfigError, match="kernel_size"):
        DSTFuseConfig(kernel_size=4)
    with pytest.raises(ConfigError, match="unknown model preset 'huge'"):
        get_config("huge")
    with pytest.raises(ConfigError, match="unknown DSTFuseConfig keys"):
        DSTFuseConfig.from_dict({"depth": 3})


# ---------------------------------------------------------------- the stream preset
@pytest.fixture()
def stream_model():
    torch.manual_seed(0)
    return DSTFuse(get_config("stream")).eval()


@pytest.mark.parametrize("shape", [(1, 1, 97, 131), (2, 1, 64, 48), (1, 1, 1, 1), (1, 1, 3, 5)])
def test_stream_forward_any_size_and_work_scale(stream_model, shape):
    torch.manual_seed(1)
    ir, vis = torch.rand(shape), torch.rand(shape)
    for scale in (1.0, 0.5, 0.25):
        with torch.inference_mode():
            out = stream_model.set_work_scale(scale).intermediates(ir, vis)
        assert all(t.shape == shape and 0.0 <= float(t.min()) and float(t.max()) <= 1.0 for t in out)
    assert stream_model.size_multiple == 8


def test_blend_head_is_made_of_the_sources_bands():
    from dstfuse_stream.model import FusionModule

    fusion = FusionModule(get_config("stream"))
    torch.manual_seed(2)
    ir, vis = torch.rand(1, 1, 24, 32), torch.rand(1, 1, 24, 32)
    big = torch.full((1, 2, 24, 32), 30.0)
    with torch.inference_mode():
        torch.testing.assert_close(fusion.blend(ir, vis, -big), vis, atol=1e-6, rtol=0)  # weights ~0: the visible
        torch.testing.assert_close(fusion.blend(ir, vis, big), ir, atol=1e-6, rtol=0)  # weights ~1: the IR
        base_only = torch.cat([big[:, :1], -big[:, :1]], dim=1)  # IR base + visible detail
        blur = fusion.bands(torch.cat([vis, ir], dim=1))
        expected = blur[:, 1:] + (vis - blur[:, :1])
        torch.testing.assert_close(fusion.blend(ir, vis, base_only), expected, atol=1e-6, rtol=0)
        # the untrained head starts at the average of the sources (zero-initialised final conv)
        torch.testing.assert_close(fusion.fuse(ir, vis), (ir + vis) / 2, atol=1e-6, rtol=0)
        same = fusion.fuse(vis, vis)  # identical sources: any weights return the source
    torch.testing.assert_close(same, vis, atol=1e-6, rtol=0)


def test_stream_mapping_attention_sees_the_visible_and_the_paper_one_does_not(stream_model, lite_model):
    torch.manual_seed(3)
    ir, vis_a, vis_b = (torch.rand(1, 1, 32, 32) for _ in range(3))
    d, f = torch.rand(1, 1, 32, 32), torch.rand(1, 1, 32, 32)
    with torch.inference_mode():
        assert not torch.equal(stream_model.mapping.attention_map(ir, vis_a, d, f), stream_model.mapping.attention_map(ir, vis_b, d, f))
        assert torch.equal(lite_model.mapping.attention_map(ir, vis_a, d, f), lite_model.mapping.attention_map(ir, vis_b, d, f))


def test_work_scale_keeps_full_resolution_detail_and_rejects_the_residual_head(stream_model):
    """At half scale the networks see a downsampled pair, but the blend and the CST correction are
    applied to the full-resolution images: a 1-pixel checkerboard in both sources survives."""
    y, x = torch.meshgrid(torch.arange(32), torch.arange(32), indexing="ij")
    checker = ((x + y) % 2).float()[None, None] * 0.5 + 0.25
    with torch.inference_mode():
        out = stream_model.set_work_scale(0.5).intermediates(checker, checker)
    torch.testing.assert_close(out.fusion, checker, atol=1e-5, rtol=0)  # identical sources -> the source
    with pytest.raises(ConfigError, match="blend"):
        DSTFuse(get_config("lite")).set_work_scale(0.5)
    with pytest.raises(ConfigError, match="work_scale"):
        stream_model.set_work_scale(0.3)


def test_gaussian_blur_preserves_constants_and_blurs_a_step():
    from dstfuse_stream.model import GaussianBlur

    blur = GaussianBlur(2.0)
    const = torch.full((2, 2, 9, 11), 0.3)
    torch.testing.assert_close(blur(const), const)
    step = torch.zeros(1, 1, 5, 40)
    step[..., 20:] = 1.0
    out = blur(step)[0, 0, 2]
    assert float(out[19]) < 0.5 < float(out[20]) and float(out[14]) > 0.0 and float(out[25]) < 1.0
    assert "kernel" not in blur.state_dict()


def test_old_lite_checkpoints_keep_their_parameter_names():
    """New config fields default to the first release's architecture: same state_dict keys and shapes."""
    names = {k: tuple(v.shape) for k, v in DSTFuse(get_config("lite")).state_dict().items()}
    assert "cst.in_edges.0.0.weight" in names and "cst.edge_conv.0.weight" in names
    assert names["fusion.trunk.out.1.0.weight"] == (1, 8, 3, 3)
