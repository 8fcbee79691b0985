"""V and M: sizes against the paper, learning on a tiny batch, sequence/step agreement, temperature sampling."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from dreamgym.models import MDNRNN, ConvVAE, MDNOutput, MDNRNNConfig, VAEConfig, frames_to_tensor
from dreamgym.models.mdnrnn import check_temperature, mixture_nll, sample_mixture
from dreamgym.world_model import WorldModelConfig

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def n_params(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def test_vae_shapes_and_paper_parameter_count() -> None:
    vae = ConvVAE(VAEConfig(z_size=32))
    assert n_params(vae) == pytest.approx(4.35e6, rel=0.01)
    x = torch.rand(3, 3, 64, 64)
    mu, logvar = vae.encode(x)
    assert mu.shape == logvar.shape == (3, 32)
    with torch.no_grad():
        recon = vae.decode(mu)
    assert recon.shape == (3, 3, 64, 64)
    assert float(recon.min()) >= 0.0 and float(recon.max()) <= 1.0


@pytest.mark.parametrize(("game", "expected"), [("carracing", 422e3), ("takecover", 1.68e6)])
def test_mdnrnn_paper_parameter_counts(game: str, expected: float) -> None:
    config = WorldModelConfig.for_game(game).mdnrnn
    assert n_params(MDNRNN(config)) == pytest.approx(expected, rel=0.01)


def test_mdnrnn_output_shapes() -> None:
    config = MDNRNNConfig(z_size=8, action_dim=3, hidden_size=16, restart_flag=True)
    out, (h, c) = MDNRNN(config)(torch.randn(2, 7, 8), torch.randn(2, 7, 3), torch.zeros(2, 7))
    assert out.log_pi.shape == out.mu.shape == out.log_sigma.shape == (2, 7, 8, 5)
    assert out.reward.shape == out.done_logit.shape == (2, 7)
    assert h.shape == c.shape == (1, 2, 16)
    torch.testing.assert_close(out.log_pi.exp().sum(-1), torch.ones(2, 7, 8))


def test_restart_flag_is_required_when_configured() -> None:
    model = MDNRNN(MDNRNNConfig(z_size=4, action_dim=1, hidden_size=8, restart_flag=True))
    with pytest.raises(ValueError, match="restart flag"):
        model(torch.zeros(1, 3, 4), torch.zeros(1, 3, 1))


def test_step_matches_sequence_forward() -> None:
    """One set of weights: stepping one step at a time reproduces the sequence pass."""
    torch.manual_seed(0)
    model = MDNRNN(MDNRNNConfig(z_size=8, action_dim=1, hidden_size=16, restart_flag=True))
    z, a = torch.randn(3, 6, 8), torch.randn(3, 6, 1)
    restart = torch.zeros(3, 6)
    restart[:, 0] = 1
    seq, _ = model(z, a, restart)
    state = model.initial_state(3)
    for t in range(6):
        step, state = model.step(z[:, t], a[:, t], restart[:, t], state)
        torch.testing.assert_close(step.mu, seq.mu[:, t])
        torch.testing.assert_close(step.done_logit, seq.done_logit[:, t])


def structured_frames(n: int, seed: int = 0) -> np.ndarray:
    """(n, 64, 64, 3) uint8 frames of a coloured rectangle on a grey background: learnable, not noise."""
    rng = np.random.default_rng(seed)
    frames = np.full((n, 64, 64, 3), 90, dtype=np.uint8)
    for f in frames:
        x, y = rng.integers(0, 40, size=2)
        f[y : y + 24, x : x + 24] = rng.integers(0, 256, size=3)
    return frames


def test_tiny_vae_learns_a_tiny_batch() -> None:
    torch.manual_seed(0)
    vae = ConvVAE(VAEConfig(z_size=8))
    x = frames_to_tensor(structured_frames(4))
    opt = torch.optim.Adam(vae.parameters(), lr=1e-3)
    gen = torch.Generator().manual_seed(0)
    losses = []
    for _ in range(20):
        loss, metrics = vae.loss(x, gen)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(metrics["recon"])
    assert np.mean(losses[-3:]) < 0.75 * losses[0]


def test_tiny_mdnrnn_learns_dynamics_and_done() -> None:
    """z_{t+1} = 0.8 z_t + action, done at the last step: NLL and done BCE both fall."""
    torch.manual_seed(0)
    model = MDNRNN(MDNRNNConfig(z_size=4, action_dim=1, hidden_size=16, restart_flag=True, reward_head=True))
    gen = torch.Generator().manual_seed(1)
    B, T = 16, 12
    action = torch.randint(-1, 2, (B, T, 1), generator=gen).float()
    z = torch.zeros(B, T + 1, 4)
    z[:, 0] = torch.randn(B, 4, generator=gen)
    for t in range(T):
        z[:, t + 1] = 0.8 * z[:, t] + action[:, t]
    restart, done, reward = torch.zeros(B, T), torch.zeros(B, T), torch.ones(B, T)
    restart[:, 0], done[:, -1] = 1, 1
    mask = torch.ones(B, T, dtype=torch.bool)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    history = []
    for _ in range(150):
        out, _ = model(z[:, :-1], action, restart)
        loss, metrics = model.loss(out, z[:, 1:], mask, reward, done, mask)
        opt.zero_grad()
        loss.backward()
        opt.step()
        history.append(metrics)
    assert history[-1]["nll"] < history[0]["nll"] - 1.0
    assert history[-1]["done_bce"] < 0.5 * history[0]["done_bce"]
    assert history[-1]["reward_mse"] < 0.1 * history[0]["reward_mse"]


def test_loss_masks_ignore_padding() -> None:
    """Garbage targets at masked steps change nothing."""
    model = MDNRNN(MDNRNNConfig(z_size=4, action_dim=1, hidden_size=8, reward_head=True))
    z, a = torch.randn(2, 5, 4), torch.randn(2, 5, 1)
    out, _ = model(z, a)
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]], dtype=torch.bool)
    target, reward, done = torch.randn(2, 5, 4), torch.randn(2, 5), torch.zeros(2, 5)
    loss_a, _ = model.loss(out, target, mask, reward, done, mask)
    target[0, 3:], reward[0, 3:], done[0, 3:] = 1e3, 1e3, 1.0
    loss_b, _ = model.loss(out, target, mask, reward, done, mask)
    assert loss_a.item() == loss_b.item()


def test_done_probability_undoes_the_positive_weight() -> None:
    model = MDNRNN(MDNRNNConfig(z_size=4, action_dim=1, hidden_size=8, done_pos_weight=10.0))
    p = model.done_probability(torch.tensor([0.0, math.log(10.0)]))
    torch.testing.assert_close(p, torch.tensor([1 / 11, 0.5]))


def mixture(b: int = 2000) -> MDNOutput:
    """B identical 1-D mixtures: weights 0.7 / 0.3 at means -2 / 3, sigma 0.5."""
    log_pi = torch.log(torch.tensor([0.7, 0.3])).expand(b, 1, 2)
    mu = torch.tensor([-2.0, 3.0]).expand(b, 1, 2)
    log_sigma = torch.full((b, 1, 2), math.log(0.5))
    return MDNOutput(log_pi, mu, log_sigma, torch.zeros(b), torch.zeros(b))


def sample_next_z(out: MDNOutput, temperature: float | torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """z (B, Z) from ``out`` at ``temperature`` (a float or one per env), its randomness drawn from ``generator``."""
    tau = torch.as_tensor(temperature, dtype=torch.float32).expand(out.log_pi.shape[0])
    shape = out.log_pi.shape[:-1]
    return sample_mixture(out, tau, torch.rand(shape, generator=generator), torch.randn(shape, generator=generator))


def test_temperature_zero_limit_collapses_to_the_most_likely_mean() -> None:
    z = sample_next_z(mixture(), 1e-6, torch.Generator().manual_seed(0))
    torch.testing.assert_close(z, torch.full_like(z, -2.0), atol=1e-2, rtol=0)


def test_higher_temperature_widens_the_spread() -> None:
    spread = [float(sample_next_z(mixture(), tau, torch.Generator().manual_seed(0)).std()) for tau in (0.3, 1.0, 2.0)]
    assert spread[0] < spread[1] < spread[2]
    # At tau = 1 the samples follow the mixture itself: 70 % near the first mean.
    z = sample_next_z(mixture(), 1.0, torch.Generator().manual_seed(0))
    assert float((z < 0.5).float().mean()) == pytest.approx(0.7, abs=0.05)


def test_same_seed_same_samples_and_per_env_temperatures() -> None:
    out = mixture(4)
    a = sample_next_z(out, 1.15, torch.Generator().manual_seed(3))
    b = sample_next_z(out, 1.15, torch.Generator().manual_seed(3))
    c = sample_next_z(out, 1.15, torch.Generator().manual_seed(4))
    assert torch.equal(a, b) and not torch.equal(a, c)
    per_env = sample_next_z(out, torch.tensor([1e-6, 1e-6, 1.0, 1.0]), torch.Generator().manual_seed(3))
    torch.testing.assert_close(per_env[:2], torch.full((2, 1), -2.0), atol=1e-2, rtol=0)


@pytest.mark.parametrize("bad", [0.0, -1.0, float("nan"), float("inf")])
def test_invalid_temperature_is_rejected(bad: float) -> None:
    with pytest.raises(ValueError, match="temperature"):
        check_temperature(bad)


def test_mixture_nll_matches_a_single_gaussian() -> None:
    out = MDNOutput(torch.zeros(1, 1, 1), torch.zeros(1, 1, 1), torch.zeros(1, 1, 1), torch.zeros(1), torch.zeros(1))
    nll = mixture_nll(out, torch.tensor([[1.0]]))
    assert float(nll) == pytest.approx(0.5 + 0.5 * math.log(2 * math.pi))
