"""Independent numpy references: explicit per-frequency masking and Fourier interpolation."""

from __future__ import annotations

import itertools

import numpy as np


def frequency(index: int, n: int) -> int:
    """Signed frequency of FFT bin ``index`` on ``n`` points (Nyquist of even n is −n/2)."""
    return index if index < (n + 1) // 2 else index - n


def reference_spectral_conv(x: np.ndarray, weight: np.ndarray) -> np.ndarray:
    """y = Re F⁻¹(c · R x̂) with a full complex FFT and a per-frequency loop.

    x: (B, C_in, *grid) real; weight: (C_in, C_out, 2m_1, …, m_d) complex. Frequency k is
    kept iff −m_j ≤ k_j < m_j (j < d) and 0 ≤ k_d < m_d with k_d in the real-FFT half
    (bins 0 … n_d//2); c = 1 on the k_d = 0 and Nyquist planes, 2 elsewhere (the weight the
    Hermitian extension of a half spectrum gives).
    """
    d = weight.ndim - 2
    grid = x.shape[-d:]
    modes = [s // 2 for s in weight.shape[2:-1]] + [weight.shape[-1]]
    spectrum = np.fft.fftn(x, axes=tuple(range(-d, 0)))
    out = np.zeros((x.shape[0], weight.shape[1], *grid), dtype=complex)
    for bins in itertools.product(*(range(n) for n in grid)):
        w_index = []
        for j in range(d - 1):
            f = frequency(bins[j], grid[j])
            if not -modes[j] <= f < modes[j]:
                break
            w_index.append(f % (2 * modes[j]))
        else:
            last, n = bins[-1], grid[-1]
            if last > n // 2 or last >= modes[-1]:
                continue
            c = 1.0 if last == 0 or 2 * last == n else 2.0
            r = weight[(slice(None), slice(None), *w_index, last)]  # (C_in, C_out)
            out[(slice(None), slice(None), *bins)] = c * (spectrum[(..., *bins)] @ r)
    return np.real(np.fft.ifftn(out, axes=tuple(range(-d, 0))))


def fourier_interpolate(y: np.ndarray, fine: tuple[int, ...]) -> np.ndarray:
    """Band-limited interpolation of y (…, *grid) onto the finer grid ``fine``.

    Requires y to have no content at Nyquist bins (otherwise the interpolant is ambiguous).
    """
    d = len(fine)
    grid = y.shape[-d:]
    spectrum = np.fft.fftn(y, axes=tuple(range(-d, 0)))
    out = np.zeros((*y.shape[:-d], *fine), dtype=complex)
    scale = np.prod(fine) / np.prod(grid)
    for bins in itertools.product(*(range(n) for n in grid)):
        freqs = [frequency(b, n) for b, n in zip(bins, grid)]
        value = spectrum[(..., *bins)]
        if any(2 * abs(f) == n for f, n in zip(freqs, grid)):
            assert np.abs(value).max() < 1e-9 * max(1.0, np.abs(spectrum).max())
            continue
        out[(..., *(f % nf for f, nf in zip(freqs, fine)))] = scale * value
    return np.real(np.fft.ifftn(out, axes=tuple(range(-d, 0))))


def band_limited(rng: np.random.Generator, channels: int, band: int,
                 grid: tuple[int, ...]) -> np.ndarray:
    """A random real trigonometric polynomial with |k_j| ≤ band, sampled at i_j/n_j."""
    d = len(grid)
    coords = np.meshgrid(*(np.arange(n) / n for n in grid), indexing="ij")
    out = np.zeros((1, channels, *grid))
    for k in itertools.product(range(-band, band + 1), repeat=d):
        phase = 2 * np.pi * sum(kj * xj for kj, xj in zip(k, coords))
        a, b = rng.standard_normal((2, channels)).reshape(2, channels, *([1] * d))
        out[0] += a * np.cos(phase) + b * np.sin(phase)
    return out
