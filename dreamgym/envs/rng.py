"""Counter-based random numbers for batched dreams: each draw is a pure function of (key, counter, lane).

Every env owns a key (two 32-bit words derived from its seed) and a counter of draws. One draw gives the
env ``L`` uniforms in (0, 1), one per lane, computed by an integer hash of (key, counter, lane). Nothing
depends on how many envs share the batch or on the device, so env ``i`` of a VectorEnv seeded ``s + i``
draws exactly the numbers of a single env seeded ``s + i``, and the uniforms are bit-identical on CPU and
GPU. 32-bit arithmetic is done in int64 with ``& 0xFFFFFFFF``; the hash (Wellons' improved lowbias32,
``[16 21f0aaad 15 735a2d97 15]``) uses multipliers below 2**31 so no product overflows int64.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence

import numpy as np
import torch

MASK32 = 0xFFFFFFFF
_SEED_SALT = (0x9E3779B9, 0x85EBCA6B)
_LANE_SALT = 0x632BE5AB


def hash32(x: torch.Tensor) -> torch.Tensor:
    """A bijective avalanche hash of 32-bit values held in an int64 tensor (any shape)."""
    return hash32_(x.clone(), torch.empty_like(x))


def hash32_(x: torch.Tensor, scratch: torch.Tensor) -> torch.Tensor:
    """:func:`hash32` in place in ``x``, using ``scratch`` (same shape) for the shifts: no allocation."""
    x.bitwise_xor_(torch.bitwise_right_shift(x, 16, out=scratch))
    x.mul_(0x21F0AAAD).bitwise_and_(MASK32)
    x.bitwise_xor_(torch.bitwise_right_shift(x, 15, out=scratch))
    x.mul_(0x735A2D97).bitwise_and_(MASK32)
    return x.bitwise_xor_(torch.bitwise_right_shift(x, 15, out=scratch))


SEED_LIMIT = 2**64
"""Seeds are integers in [0, SEED_LIMIT): a key holds 64 bits, so a larger seed would replay a smaller one's."""


def check_seed(seed: object) -> int:
    """``seed`` as an int; ValueError naming it unless it is an integer in [0, 2**64) (the envs' seed check)."""
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or not 0 <= int(seed) < SEED_LIMIT:
        raise ValueError(f"a seed must be an integer in [0, 2**64), got {seed!r}")
    return int(seed)


Seeds = int | Sequence[int | None] | None
"""``reset(seed=...)`` of a vector env: one int (env i takes seed + i), one seed or None per env, or None"""


def spread_seeds(seed: Seeds, num_envs: int) -> list[int | None]:
    """One checked seed (or None: the env keeps its stream) per env of a vector env's ``reset(seed=...)``."""
    if isinstance(seed, numbers.Integral) and not isinstance(seed, bool):
        check_seed(seed)
        check_seed(int(seed) + num_envs - 1)  # env i takes seed + i
        return [int(seed) + i for i in range(num_envs)]
    if seed is None:
        return [None] * num_envs
    if isinstance(seed, (Sequence, np.ndarray)) and not isinstance(seed, str):
        if len(seed) != num_envs:
            raise ValueError(f"reset(seed=...) got {len(seed)} seeds for {num_envs} envs")
        return [None if s is None else check_seed(s) for s in seed]
    raise TypeError(f"seed must be an int, a sequence of {num_envs} ints/None, or None; got {seed!r}")


def seed_keys(seeds: Sequence[int], device: torch.device | str = "cpu") -> torch.Tensor:
    """(N,) seeds in [0, 2**64) -> (N, 2) int64 keys; distinct seeds get distinct keys."""
    seeds = [check_seed(s) for s in seeds]
    lo = torch.tensor([s & MASK32 for s in seeds], dtype=torch.int64, device=device)
    hi = torch.tensor([(s >> 32) & MASK32 for s in seeds], dtype=torch.int64, device=device)
    k0 = hash32(lo ^ _SEED_SALT[0])
    k1 = hash32(hi ^ hash32(k0 ^ _SEED_SALT[1]))
    return torch.stack([k0, k1], dim=1)


def to_unit_float(x: torch.Tensor) -> torch.Tensor:
    """32-bit hashes -> float32 uniforms in (0, 1) with 24 random bits (exact in float32)."""
    return (x >> 8).to(torch.float32).add_(0.5).mul_(1.0 / (1 << 24))


def box_muller(u: torch.Tensor) -> torch.Tensor:
    """(B, 2m) uniforms -> (B, 2m) standard normals (both the cosine and the sine branch)."""
    u1, u2 = u.chunk(2, dim=-1)
    radius = torch.sqrt(-2.0 * torch.log(u1))
    angle = (2.0 * math.pi) * u2
    return torch.cat([radius * torch.cos(angle), radius * torch.sin(angle)], dim=-1)


class CounterRNG:
    """Keys and draw counters of N envs; :meth:`draw` gives each env its next ``lanes`` uniforms."""

    def __init__(self, num_envs: int, lanes: int, device: torch.device | str = "cpu") -> None:
        self.keys = torch.zeros(num_envs, 2, dtype=torch.int64, device=device)
        self.counters = torch.zeros(num_envs, dtype=torch.int64, device=device)
        self.lane_codes = hash32(torch.arange(lanes, dtype=torch.int64, device=device) + _LANE_SALT)
        # draw()'s work buffers: it allocates only its result
        self._stream, self._stream_scratch = torch.empty_like(self.counters), torch.empty_like(self.counters)
        self._bits = torch.empty(num_envs, lanes, dtype=torch.int64, device=device)
        self._scratch = torch.empty_like(self._bits)

    def seed(self, keys: torch.Tensor, mask: torch.Tensor | None = None) -> None:
        """Gives the envs in ``mask`` (all if None) new (N, 2) ``keys`` and restarts their counters."""
        if mask is None:
            self.keys.copy_(keys)
            self.counters.zero_()
        else:
            self.keys.copy_(torch.where(mask.unsqueeze(1), keys, self.keys))
            self.counters.masked_fill_(mask, 0)

    def take(self, index: torch.Tensor) -> CounterRNG:
        """A generator of the envs ``index`` (B,) int64 selects, with their keys and counters: each continues
        its own stream."""
        rng = CounterRNG(len(index), len(self.lane_codes), self.keys.device)
        rng.keys.copy_(self.keys.index_select(0, index))
        rng.counters.copy_(self.counters.index_select(0, index))
        return rng

    def draw(self, advance: torch.Tensor | None = None) -> torch.Tensor:
        """(N, lanes) uniforms for every env's current counter; counters of ``advance`` (all if None) move on.

        Envs outside ``advance`` get numbers too (the batch stays whole) but will draw them again.
        """
        # stream = hash32(k1 ^ hash32(k0 ^ counter)) (N,); x = hash32(stream ^ lane code) (N, L)
        stream = torch.bitwise_and(self.counters, MASK32, out=self._stream).bitwise_xor_(self.keys[:, 0])
        stream = hash32_(hash32_(stream, self._stream_scratch).bitwise_xor_(self.keys[:, 1]), self._stream_scratch)
        x = hash32_(torch.bitwise_xor(stream.unsqueeze(1), self.lane_codes, out=self._bits), self._scratch)
        if advance is None:
            self.counters += 1
        else:
            self.counters += advance.to(torch.int64)
        return to_unit_float(x)
