"""The multi-level wavelet loss: exact DWT against PyWavelets, perfect reconstruction, Parseval, weighting."""

import numpy as np
import pytest
import pywt
import torch

from ism.method.wavelet import WaveletLoss, WaveletTransform


def reconstruct(transform, details, low):
    """The inverse of all levels (training needs only the analysis; this checks it loses nothing)."""
    for detail in reversed(details):
        low = transform.synthesis(torch.cat([low.unsqueeze(2), detail], dim=2))
    return low


@pytest.mark.parametrize("wavelet", ["haar", "db2", "sym4"])
def test_one_level_matches_pywavelets_periodization(wavelet):
    x = torch.randn(2, 3, 16, 16, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    transform = WaveletTransform(wavelet).double()
    transform.kernels = transform.kernels.double()
    bands = transform.analysis(x)
    c_a, (c_h, c_v, c_d) = pywt.dwt2(x.numpy(), wavelet, mode="periodization", axes=(-2, -1))
    for i, reference in enumerate([c_a, c_h, c_v, c_d]):
        np.testing.assert_allclose(bands[:, :, i].numpy(), reference, atol=1e-6)


@pytest.mark.parametrize("wavelet", ["haar", "db2"])
def test_perfect_reconstruction_and_parseval_over_all_levels(wavelet):
    x = torch.randn(4, 2, 32, 32, generator=torch.Generator().manual_seed(1))
    transform = WaveletTransform(wavelet)
    details, low = transform(x)
    assert len(details) == transform.max_levels(32)
    assert torch.allclose(reconstruct(transform, details, low), x, atol=1e-5)
    energy = low.pow(2).sum() + sum(d.pow(2).sum() for d in details)
    assert energy.item() == pytest.approx(x.pow(2).sum().item(), rel=1e-5)


def test_default_levels_follow_the_spatial_size():
    assert WaveletTransform("haar").max_levels(32) == 5, "iSM's L = 5 for 32x32 latents"
    assert WaveletTransform("haar").max_levels(8) == 3
    # MNIST's 28x28: 28 -> 14 -> 7, two exact halvings (pywt.dwt_max_level alone says 4, which cannot be tiled).
    assert WaveletTransform("haar").max_levels(28) == 2
    details, low = WaveletTransform("haar")(torch.zeros(1, 1, 28, 28))
    assert [d.shape[-1] for d in details] == [14, 7] and low.shape[-1] == 7
    with pytest.raises(ValueError, match="levels do not fit"):
        WaveletTransform("haar", levels=4)(torch.zeros(1, 1, 8, 8))
    with pytest.raises(ValueError, match="not orthogonal"):
        WaveletTransform("bior2.2")


def test_parseval_trap_sum_reduction_with_unit_weights_equals_mse():
    pred = torch.randn(3, 4, 8, 8, generator=torch.Generator().manual_seed(2))
    target = torch.randn(3, 4, 8, 8, generator=torch.Generator().manual_seed(3))
    mse = (pred - target).pow(2).flatten(1).mean(1)
    trap = WaveletLoss(reduction="sum", include_mse=False)(pred, target)
    assert torch.allclose(trap, mse, rtol=1e-5), "unit weights + sum reduction is the MSE in disguise"
    default = WaveletLoss()(pred, target)
    assert not torch.allclose(default, 2 * mse, rtol=1e-2), "the default (band means) is not a rescaled MSE"


def test_band_means_weight_coarse_bands_up():
    # An error that lives only in the coarsest LL band: the MSE is tiny, the band-mean term is large.
    transform = WaveletTransform("haar")
    details, low = transform(torch.zeros(1, 1, 8, 8))
    low = torch.ones_like(low)
    error = reconstruct(transform, details, low)
    loss = WaveletLoss(include_mse=False)
    assert loss.wavelet_term(error).item() == pytest.approx(1.0)
    assert error.pow(2).mean().item() == pytest.approx(1 / 64)


def test_level_weights_change_the_loss():
    pred = torch.randn(2, 1, 8, 8, generator=torch.Generator().manual_seed(4))
    target = torch.zeros_like(pred)
    flat = WaveletLoss(level_weights=[1, 1, 1])(pred, target)
    fine = WaveletLoss(level_weights=[4, 1, 1])(pred, target)
    assert torch.all(fine > flat)
    with pytest.raises(ValueError, match="level weights"):
        WaveletLoss(level_weights=[1, 1])(pred, target)


def test_gradients_flow_to_the_prediction():
    pred = torch.randn(2, 3, 8, 8, requires_grad=True)
    WaveletLoss(wavelet="db2")(pred, torch.zeros_like(pred)).sum().backward()
    assert pred.grad is not None and pred.grad.abs().sum() > 0


def test_absolute_distance_is_the_mean_absolute_coefficient_error_of_each_band():
    """distance='absolute': L1 per band, against PyWavelets' coefficients of the error (3 levels of 8x8)."""
    error = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(5))  # the loss computes in fp32
    loss = WaveletLoss(distance="absolute", include_mse=False)
    coeffs = pywt.wavedec2(error.numpy(), "haar", mode="periodization", level=3, axes=(-2, -1))
    expected = np.abs(coeffs[0]).mean(axis=(1, 2, 3))  # the coarsest LL band
    for bands in coeffs[1:]:
        expected += sum(np.abs(band).mean(axis=(1, 2, 3)) for band in bands)
    np.testing.assert_allclose(loss.wavelet_term(error).numpy(), expected, rtol=1e-6)
    squared = WaveletLoss(include_mse=False)
    assert not torch.allclose(squared.wavelet_term(error), loss.wavelet_term(error))


@pytest.mark.parametrize("levels", [3, 5])
def test_fine_rising_weighting_weighs_each_coefficient_more_the_finer_its_level(levels):
    """A unit error on one coefficient of level l costs (1 + 2^(L-l)) x its MSE with fine_rising (finest most) and
    (1 + 4^l) x with band_mean (coarsest most); the low band as the coarsest level."""
    size = 2**levels
    losses = {w: WaveletLoss("haar", None, 1.0, None, 1.0, "mean", weighting=w) for w in ("fine_rising", "band_mean")}
    zeros = pywt.wavedec2(np.zeros((size, size)), "haar", mode="periodization", level=levels)
    for level in range(1, levels + 1):
        coeffs = [np.zeros_like(zeros[0])] + [tuple(np.zeros_like(b) for b in bands) for bands in zeros[1:]]
        coeffs[levels - level + 1][0][0, 0] = 1.0
        error = torch.tensor(pywt.waverec2(coeffs, "haar", mode="periodization"), dtype=torch.float32)[None, None]
        mse = float(error.pow(2).mean())
        ratio = {w: float(loss(error, torch.zeros_like(error))) / mse for w, loss in losses.items()}
        assert ratio["fine_rising"] == pytest.approx(1 + 2 ** (levels - level), rel=1e-5)
        assert ratio["band_mean"] == pytest.approx(1 + 4**level, rel=1e-5)
