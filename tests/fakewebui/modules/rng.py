"""Test double of webui v1.10.1 `modules/rng.py`: noise drawn per seed, so that an image made in a batch equals the
same seed made alone. `ImageRNG` keeps one generator per image; its first draw may mix in a variation seed
(`subseed_strength`, spherical interpolation) and may be made at another size and centred ("resize seed from");
after the first draw, a non-zero `eta_noise_seed_delta` reseeds the generators for the sampler's own noise.

The fake runs on CPU, so the "GPU" and "CPU" noise sources are the same CPU generator."""

from __future__ import annotations

import torch
from modules import devices, shared


def create_generator(seed):
    return torch.Generator(devices.cpu).manual_seed(int(seed))


def manual_seed(seed):
    torch.manual_seed(seed)


def randn(seed, shape, generator=None):
    """Normal noise of `shape` from `generator`, or from a generator seeded with `seed`."""
    source = create_generator(seed) if generator is None else generator
    return torch.randn(shape, generator=source, device=devices.cpu).to(devices.device)


def randn_local(seed, shape):
    return randn(seed, shape)


def randn_like(x):
    return torch.randn(x.shape, dtype=x.dtype, device=devices.cpu).to(x.device)


def randn_without_seed(shape, generator=None):
    return torch.randn(shape, generator=generator, device=devices.cpu).to(devices.device)


def slerp(val, low, high):
    """Moves from `low` (val 0) towards `high` (val 1) along the great circle between them, row by row; nearly
    parallel rows are mixed linearly."""
    unit_low = low / low.norm(dim=1, keepdim=True)
    unit_high = high / high.norm(dim=1, keepdim=True)
    cos = (unit_low * unit_high).sum(1)
    if cos.mean() > 0.9995:
        return low * (1.0 - val) + high * val
    angle = torch.acos(cos)
    weight_low = torch.sin((1.0 - val) * angle) / torch.sin(angle)
    weight_high = torch.sin(val * angle) / torch.sin(angle)
    return weight_low[:, None] * low + weight_high[:, None] * high


def _centred(noise, shape, filler):
    """`noise` placed at the centre of `filler` (shape `shape`), cropped where it is larger."""
    out = filler.clone()
    rows, cols = min(noise.shape[1], shape[1]), min(noise.shape[2], shape[2])
    top, left = (shape[1] - rows) // 2, (shape[2] - cols) // 2
    src_top, src_left = (noise.shape[1] - rows) // 2, (noise.shape[2] - cols) // 2
    out[:, top : top + rows, left : left + cols] = noise[:, src_top : src_top + rows, src_left : src_left + cols]
    return out


class ImageRNG:
    def __init__(self, shape, seeds, subseeds=None, subseed_strength=0.0, seed_resize_from_h=0, seed_resize_from_w=0):
        self.shape = tuple(int(n) for n in shape)
        self.seeds, self.subseeds, self.subseed_strength = seeds, subseeds, subseed_strength
        self.seed_resize_from_h, self.seed_resize_from_w = seed_resize_from_h, seed_resize_from_w
        self.generators = [create_generator(seed) for seed in seeds]
        self.is_first = True

    def _first_noise(self, index, seed, generator):
        shape = self.shape
        if self.seed_resize_from_h > 0 and self.seed_resize_from_w > 0:
            shape = (shape[0], int(self.seed_resize_from_h) // 8, int(self.seed_resize_from_w) // 8)
        noise = randn(seed, shape, generator=generator if shape == self.shape else None)
        if self.subseeds is not None and self.subseed_strength != 0:
            subseed = self.subseeds[index] if index < len(self.subseeds) else 0
            noise = slerp(self.subseed_strength, noise, randn(subseed, shape))
        if shape != self.shape:
            noise = _centred(noise, self.shape, randn(seed, self.shape, generator=generator))
        return noise

    def first(self):
        batch = [self._first_noise(i, s, g) for i, (s, g) in enumerate(zip(self.seeds, self.generators, strict=True))]
        delta = shared.opts.eta_noise_seed_delta or 0
        if delta:
            self.generators = [create_generator(seed + delta) for seed in self.seeds]
        return torch.stack(batch).to(shared.device)

    def next(self):
        """The first call gives the initial noise, every later one the sampler's next noise for each image."""
        if self.is_first:
            self.is_first = False
            return self.first()
        return torch.stack([randn_without_seed(self.shape, generator=g) for g in self.generators]).to(shared.device)
