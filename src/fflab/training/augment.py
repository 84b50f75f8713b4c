"""Seeded image augmentation of training batches: random crops of zero-padded images, horizontal flips, and
masking noise (random pixels set to zero)."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def augment_images(
    x: torch.Tensor, crop_padding: int, flip: bool, generator: torch.Generator, mask: float = 0.0
) -> torch.Tensor:
    """A randomly shifted (and, with `flip`, half of the time mirrored) copy of each image in x [N, C, H, W],
    with a random fraction `mask` of its values set to zero.

    Shifting pads the image with `crop_padding` zeros on every side and cuts an H x W window at a
    random offset, as in the standard CIFAR-10 recipe. Masking (the denoising autoencoders' masking
    noise) uses no spatial structure, so it keeps a permutation-invariant task permutation-invariant;
    values are not rescaled. All randomness comes from `generator` (a CPU one, whatever x's device).
    """
    if x.dim() != 4:
        raise ValueError(f"augmentation needs images [N, C, H, W], got shape {tuple(x.shape)}")
    n, _, h, w = x.shape
    out = x
    if crop_padding > 0:
        p = crop_padding
        padded = F.pad(x, (p, p, p, p))
        dy = torch.randint(0, 2 * p + 1, (n, 1), generator=generator)
        dx = torch.randint(0, 2 * p + 1, (n, 1), generator=generator)
        rows = (dy + torch.arange(h)).view(n, 1, h, 1)
        cols = (dx + torch.arange(w)).view(n, 1, 1, w)
        out = padded[torch.arange(n).view(n, 1, 1, 1), torch.arange(x.shape[1]).view(1, -1, 1, 1), rows, cols]
    if flip:
        mirror = (torch.rand(n, generator=generator) < 0.5).to(x.device)
        out = torch.where(mirror.view(n, 1, 1, 1), out.flip(3), out)
    if mask > 0:
        out = out * (torch.rand(out.shape, generator=generator) >= mask).to(x.device)
    return out
