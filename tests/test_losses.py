"""Training losses against hand-computed values on tiny images (train/losses.py)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from dstfuse_stream.errors import InputShapeError
from dstfuse_train.losses import (
    CSTLoss,
    FusionLoss,
    MappingLoss,
    PerceptualExtractor,
    PerceptualLoss,
    ReconstructionLoss,
    cst_loss,
    cst_stage_loss,
    fusion_loss,
    gradient_term,
    intensity_term,
    mapping_loss,
    perceptual_loss,
    reconstruction_loss,
    ssim_term,
)

pytestmark = pytest.mark.usefixtures("one_torch_thread")


C1, C2, EPS = 0.01**2, 0.03**2, 1e-12


def const(value: float, size: int = 16, dtype=torch.float64) -> torch.Tensor:
    return torch.full((1, 1, size, size), value, dtype=dtype)


def flat_ssim(a: float, b: float) -> float:
    """SSIM of two flat images (zero variances): kornia's formula with sigma = 0."""
    return (2 * a * b + C1) * C2 / ((a * a + b * b + C1) * C2 + EPS)


def np_sobel_magnitude(x: np.ndarray) -> np.ndarray:
    """Independent numpy |Gx| + |Gy| (kernels / 8, edge-replicated borders) of a 2-D image."""
    p = np.pad(x, 1, mode="edge")
    h, w = x.shape
    gx = np.zeros_like(x)
    gy = np.zeros_like(x)
    kx = np.array([[-1, 0, 1], [-2, 0, 2], [-1, 0, 1]], np.float64) / 8
    for i in range(h):
        for j in range(w):
            win = p[i : i + 3, j : j + 3]
            gx[i, j] = (win * kx).sum()
            gy[i, j] = (win * kx.T).sum()
    return np.abs(gx) + np.abs(gy)


def step_image() -> torch.Tensor:
    """4x4, columns [0, 0, 1, 1]: |Gx| + |Gy| is 0.5 on the two middle columns, 0 elsewhere."""
    return torch.tensor([[0.0, 0.0, 1.0, 1.0]] * 4).reshape(1, 1, 4, 4)


class FakeExtractor:
    """``x -> [x, 2x, 3x][:n]``: makes perceptual losses hand-computable."""

    def __call__(self, x: torch.Tensor, num_blocks: int) -> list[torch.Tensor]:
        return [x * (k + 1) for k in range(num_blocks)]


# ---------------------------------------------------------------- gradient and intensity terms
def test_gradient_term_step_by_hand():
    zeros = torch.zeros(1, 1, 4, 4)
    # target = max(S(V)=0, S(I)=step edges) -> mean |0 - 0.5| over 8 of 16 pixels = 0.25
    assert gradient_term(zeros, step_image(), zeros).item() == pytest.approx(0.25, abs=1e-7)
    # fused has the same edges as the target -> 0
    assert gradient_term(step_image(), step_image(), zeros).item() == 0.0
    # edges in V only count the same way (the max is symmetric)
    assert gradient_term(zeros, zeros, step_image()).item() == pytest.approx(0.25, abs=1e-7)


def test_gradient_term_matches_numpy_formula():
    rng = np.random.default_rng(3)
    f, i, v = (rng.random((4, 4)) for _ in range(3))
    expected = np.abs(np_sobel_magnitude(f) - np.maximum(np_sobel_magnitude(v), np_sobel_magnitude(i))).mean()
    t = [torch.from_numpy(a).reshape(1, 1, 4, 4) for a in (f, i, v)]
    assert gradient_term(*t).item() == pytest.approx(expected, abs=1e-12)


def test_intensity_term_by_hand():
    ir = torch.full((1, 1, 4, 4), 0.25)
    vis = torch.zeros(1, 1, 4, 4)
    vis[..., :2, :] = 1.0  # target: 1 on the top half, 0.25 on the bottom half
    fused = torch.full((1, 1, 4, 4), 0.5)
    assert intensity_term(fused, ir, vis).item() == pytest.approx((0.5 + 0.25) / 2)
    assert intensity_term(torch.maximum(ir, vis), ir, vis).item() == 0.0


# ---------------------------------------------------------------- SSIM-based terms
def test_ssim_term_flat_images_by_hand():
    assert ssim_term(const(0.2), const(0.6)).item() == pytest.approx(1 - flat_ssim(0.2, 0.6), rel=1e-5)
    assert ssim_term(const(0.2), const(0.6)).item() == pytest.approx(0.4, abs=0.001)  # 1 - 2ab/(a^2+b^2) = 1 - 0.24/0.40 (c1 small)
    assert ssim_term(const(0.7), const(0.7)).item() == pytest.approx(0.0, abs=1e-6)


def test_ssim_term_rejects_too_small_and_wrong_shape():
    with pytest.raises(InputShapeError, match="H and W > 5"):
        ssim_term(torch.zeros(1, 1, 4, 4), torch.zeros(1, 1, 4, 4))
    with pytest.raises(InputShapeError, match=r"expected shape \(B, 1, H, W\), got \(3, 16, 16\)"):
        ssim_term(torch.zeros(3, 16, 16), torch.zeros(3, 16, 16))


def test_reconstruction_loss_by_hand_and_module_agrees():
    r, x = const(0.3), const(0.5)
    expected = (0.3 - 0.5) ** 2 + 5 * (1 - flat_ssim(0.3, 0.5))
    assert reconstruction_loss(r, x).item() == pytest.approx(expected, rel=1e-5)
    assert ReconstructionLoss()(r, x).item() == reconstruction_loss(r, x).item()
    assert reconstruction_loss(x, x).item() == pytest.approx(0.0, abs=1e-6)


def test_fusion_loss_by_hand_and_module_agrees():
    fused, ir, vis = const(0.5), const(0.8), const(0.4)
    # flat images: gradient term 0; intensity |0.5 - 0.8| = 0.3; SSIM(F, V) of flats
    expected = 10 * 0.0 + 5 * 0.3 + 1 * (1 - flat_ssim(0.5, 0.4))
    assert fusion_loss(fused, ir, vis).item() == pytest.approx(expected, rel=1e-5)
    assert FusionLoss()(fused, ir, vis).item() == fusion_loss(fused, ir, vis).item()


def test_fusion_loss_gradient_weight_on_step():
    zeros = torch.zeros(1, 1, 8, 8)
    ir = torch.zeros(1, 1, 8, 8)
    ir[..., 4:] = 1.0  # vertical step: S(I) = 0.5 on columns 3 and 4 -> gradient term 16 * 0.5 / 64
    grad = 16 * 0.5 / 64
    intensity = 32 / 64  # |0 - max(0, I)|
    expected = 10 * grad + 5 * intensity + 1 * (1 - flat_ssim(0.0, 0.0))
    assert fusion_loss(zeros, ir, zeros).item() == pytest.approx(expected, abs=1e-5)
    assert mapping_loss(zeros, ir, zeros).item() == pytest.approx(10 * grad + 1 * intensity, abs=1e-6)


def test_mapping_loss_by_hand_and_module_agrees():
    mapped, ir, vis = const(0.1, 4), const(0.6, 4), const(0.3, 4)
    assert mapping_loss(mapped, ir, vis).item() == pytest.approx(0.5, abs=1e-6)
    assert MappingLoss()(mapped, ir, vis).item() == mapping_loss(mapped, ir, vis).item()
    assert mapping_loss(torch.maximum(ir, vis), ir, vis).item() == 0.0


# ---------------------------------------------------------------- perceptual and CST
def test_perceptual_loss_with_hand_extractor():
    d, i = const(0.5, 4), const(0.0, 4)
    assert perceptual_loss(d, i, extractor=FakeExtractor(), num_blocks=1).item() == pytest.approx(0.25)
    assert perceptual_loss(d, i, extractor=FakeExtractor(), num_blocks=2).item() == pytest.approx(0.25 + 1.0)
    assert perceptual_loss(i, i, extractor=FakeExtractor(), num_blocks=3).item() == 0.0


def test_cst_losses_by_hand():
    d, ir, vis = const(0.5), const(0.0), const(0.25)
    ssim = 1 - flat_ssim(0.5, 0.25)
    one_stage = 100 * (0.25 + 1.0) + ssim  # 2 blocks: MSE of (0.5, 1.0) against 0
    assert cst_stage_loss(d, ir, vis, extractor=FakeExtractor(), num_blocks=2).item() == pytest.approx(one_stage, rel=1e-5)
    # stage 1 uses 3 blocks (0.25 + 1 + 2.25), stage 2 uses 2 blocks
    both = 100 * (0.25 + 1.0 + 2.25) + ssim + one_stage
    assert cst_loss(d, d, ir, vis, extractor=FakeExtractor()).item() == pytest.approx(both, rel=1e-5)


def test_cst_loss_module_matches_function():
    torch.manual_seed(0)
    s1, s2, ir, vis = (torch.rand(2, 1, 16, 16) for _ in range(4))
    module = CSTLoss(seed=5)
    expected = cst_loss(s1, s2, ir, vis, extractor=PerceptualExtractor(seed=5))
    assert torch.allclose(module((s1, s2), ir, vis), expected)
    assert module((ir, ir), ir, vis).item() == pytest.approx(2 * ssim_term(ir, vis).item(), rel=1e-5)


def test_perceptual_extractor_is_frozen_seeded_and_follows_dtype():
    ext = PerceptualExtractor(seed=1)
    assert all(not p.requires_grad for p in ext.parameters())
    ext.train()
    assert not ext.training and not any(m.training for m in ext.modules())
    again, other = PerceptualExtractor(seed=1), PerceptualExtractor(seed=2)
    x = torch.rand(1, 1, 16, 16)
    feats = ext(x, 3)
    assert [tuple(f.shape) for f in feats] == [(1, 16, 16, 16), (1, 32, 8, 8), (1, 64, 4, 4)]
    assert torch.equal(feats[-1], again(x, 3)[-1])
    assert not torch.equal(feats[-1], other(x, 3)[-1])
    loss_mod = PerceptualLoss(num_blocks=2)
    d = torch.rand(1, 1, 16, 16, dtype=torch.float64, requires_grad=True)
    loss = loss_mod(d, torch.rand(1, 1, 16, 16, dtype=torch.float64))
    assert loss.dtype == torch.float64
    loss.backward()
    assert d.grad is not None and d.grad.abs().sum() > 0
    assert all(p.grad is None for p in loss_mod.parameters())
    assert "extractor" not in "".join(n for n, _ in __import__("dstfuse_stream").DSTFuse(
        __import__("dstfuse_stream").get_config("lite")).state_dict().items())


def test_gradcheck_float64():
    torch.manual_seed(0)
    f = torch.rand(1, 1, 8, 8, dtype=torch.float64, requires_grad=True)
    ir, vis = torch.rand(1, 1, 8, 8, dtype=torch.float64), torch.rand(1, 1, 8, 8, dtype=torch.float64)
    assert torch.autograd.gradcheck(lambda x: ssim_term(x, vis), (f,))
    assert torch.autograd.gradcheck(lambda x: intensity_term(x, ir, vis), (f,))
    assert torch.autograd.gradcheck(lambda x: gradient_term(x, ir, vis), (f,))
