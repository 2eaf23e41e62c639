"""Normalised, upsampled, re-normalised feature maps without materialising them.

The contrastive loss works on f = normalise_c(upsample(normalise_c(feat))) at the frame
resolution: D channels per frame pixel (256 x 415k floats at 480x864, several copies with the
gradients). Everything the loss needs from f can be had from the low-resolution map n =
normalise_c(feat) instead, because bilinear upsampling is linear:

* f_p . v = upsample(n . v)_p / |g_p| for any vector v, with g_p = upsample(n)_p;
* |g_p|^2 = sum over the 4 source cells a, b of p of w_a w_b (n_a . n_b): a few dot-product
  maps between neighbouring cells of the low-resolution grid;
* sum_p c_p f_p = sum_k n_k (U^T (c / |g|))_k, U^T being the adjoint of the upsampling.

So memory grows with (objects) x (frame pixels) instead of (channels) x (frame pixels). The
values equal the direct computation up to float rounding (PyTorch's bilinear rule,
align_corners=False, is reproduced index for index).
"""
from typing import Tuple

import torch
import torch.nn.functional as F


def _axis(size_in: int, size_out: int, device):
    """Source indices i0 (i1 = i0 + 1 on a replicate-padded axis) and weights l0, l1."""
    scale = size_in / size_out
    src = ((torch.arange(size_out, device=device, dtype=torch.float32) + 0.5) * scale - 0.5)
    src = src.clamp_min(0)
    i0 = src.floor().long().clamp_max(size_in - 1)
    l1 = src - i0.to(src.dtype)
    return i0, 1 - l1, l1


class UpsampledNormalisedFeatures:
    """f = normalise(upsample(n)) for n [D, h, w] (already channel-normalised) to `out_hw`."""

    def __init__(self, n: torch.Tensor, out_hw: Tuple[int, int]):
        self.n = n
        self.out_hw = tuple(out_hw)
        d, h, w = n.shape
        iy, y0, y1 = _axis(h, out_hw[0], n.device)
        ix, x0, x1 = _axis(w, out_hw[1], n.device)
        padded = F.pad(n[None], (0, 1, 0, 1), mode='replicate')[0]      # [D, h+1, w+1]
        # dot products between each cell and its right, lower and diagonal neighbours
        self_dot = (padded * padded).sum(0)                                  # [h+1, w+1]
        right = (padded[:, :, :-1] * padded[:, :, 1:]).sum(0)                # [h+1, w]
        down = (padded[:, :-1, :] * padded[:, 1:, :]).sum(0)                 # [h, w+1]
        diag = (padded[:, :-1, :-1] * padded[:, 1:, 1:]).sum(0)              # [h, w]
        anti = (padded[:, :-1, 1:] * padded[:, 1:, :-1]).sum(0)              # [h, w]
        y, x = iy[:, None], ix[None, :]
        c00, c01 = y0[:, None] * x0[None, :], y0[:, None] * x1[None, :]
        c10, c11 = y1[:, None] * x0[None, :], y1[:, None] * x1[None, :]
        sq = (c00 ** 2 * self_dot[y, x] + c01 ** 2 * self_dot[y, x + 1]
              + c10 ** 2 * self_dot[y + 1, x] + c11 ** 2 * self_dot[y + 1, x + 1]
              + 2 * (c00 * c01 * right[y, x] + c10 * c11 * right[y + 1, x]
                     + c00 * c10 * down[y, x] + c01 * c11 * down[y, x + 1]
                     + c00 * c11 * diag[y, x] + c01 * c10 * anti[y, x]))
        self.norm = sq.clamp_min(0).sqrt().clamp_min(1e-12)                  # |g_p|, [H, W]

    def dot(self, vectors: torch.Tensor) -> torch.Tensor:
        """f_p . v for every pixel p and every row v of `vectors` [O, D] -> [O, H, W]."""
        low = torch.einsum('od,dhw->ohw', vectors, self.n)
        up = F.interpolate(low[None], size=self.out_hw, mode='bilinear', align_corners=False)[0]
        return up / self.norm

    def weighted_sums(self, weights: torch.Tensor) -> torch.Tensor:
        """sum_p weights[o, p] f_p for each map of `weights` [O, H, W] -> [O, D]."""
        d, h, w = self.n.shape
        with torch.enable_grad():
            probe = torch.zeros(weights.shape[0], h, w, device=weights.device,
                                dtype=weights.dtype, requires_grad=True)
            up = F.interpolate(probe[None], size=self.out_hw, mode='bilinear',
                               align_corners=False)[0]
            cells, = torch.autograd.grad(up, probe, grad_outputs=weights / self.norm)
        return cells.reshape(-1, h * w) @ self.n.reshape(d, h * w).t()
