"""Dropout in M: trained with it, the dream samples a fresh mask every step (an implicit ensemble of M's)."""

from __future__ import annotations

import dataclasses

import gymnasium as gym
import numpy as np
import pytest
import torch
from conftest import make_tiny_world_model
from gymnasium.utils.env_checker import check_env
from test_dream_vector import N, assert_close, random_actions

import dreamgym  # noqa: F401  (registers the ids)
from dreamgym.envs import DreamEnv, DreamVectorEnv
from dreamgym.models.mdnrnn import MDNRNN, FusedStep, MDNRNNConfig
from dreamgym.world_model import WorldModel, WorldModelConfig


def with_dropout(model: WorldModel, p: float) -> WorldModel:
    """The same weights under a config that says M was trained with dropout ``p``."""
    mdn_config = dataclasses.replace(model.config.mdnrnn, dropout=p)
    config = WorldModelConfig(model.config.game, model.config.vae, mdn_config)
    copy = WorldModel(config, model.initial_mu, model.initial_logvar, model.provenance)
    copy.load_state_dict(model.state_dict())
    return copy.eval()


def episode(env: gym.Env, seed: int, steps: int = 60) -> list[np.ndarray]:
    obs, _ = env.reset(seed=seed)
    out = [obs]
    for action in random_actions("takecover", steps, seed=seed):
        obs, _, terminated, truncated, _ = env.step(int(action[0]))
        out.append(obs)
        if terminated or truncated:
            break
    return out


def test_the_dream_with_dropout_passes_the_checker_and_replays_its_seed() -> None:
    check_env(DreamEnv(make_tiny_world_model(), dropout=0.3))
    model = make_tiny_world_model()
    first, again = (episode(DreamEnv(model, dropout=0.3, done_mode="threshold"), seed=5) for _ in range(2))
    plain = episode(DreamEnv(model, done_mode="threshold"), seed=5)
    assert all(np.array_equal(a, b) for a, b in zip(first, again, strict=True))
    # the reset draw is the same; the masks change every later z
    assert np.array_equal(first[0], plain[0]) and not np.allclose(first[5], plain[5])


def test_dropout_zero_is_the_plain_dream_and_the_default_is_the_trained_rate() -> None:
    model = make_tiny_world_model()
    plain, explicit = (episode(DreamEnv(model, **kw), seed=3) for kw in ({}, {"dropout": 0.0}))
    assert all(np.array_equal(a, b) for a, b in zip(plain, explicit, strict=True))
    trained = with_dropout(model, 0.25)
    assert DreamEnv(trained).core.dropout == 0.25 and DreamEnv(trained, dropout=0.0).core.dropout == 0.0
    assert DreamVectorEnv(2, trained, device="cpu").core.dropout == 0.25


@pytest.mark.parametrize("bad", [1.0, -0.1, "0.2", True])
def test_a_dropout_rate_outside_zero_one_is_refused(bad: object) -> None:
    with pytest.raises(ValueError, match="dropout must be a number in \\[0, 1\\)"):
        DreamEnv(make_tiny_world_model(), dropout=bad)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="dropout"):
        MDNRNNConfig(dropout=bad)  # type: ignore[arg-type]


def test_vector_env_i_equals_a_single_env_seeded_s_plus_i_with_dropout() -> None:
    model = make_tiny_world_model()
    envs = DreamVectorEnv(N, model, device="cpu", dropout=0.4, max_episode_steps=25)
    singles = [DreamEnv(model, dropout=0.4, max_episode_steps=25) for _ in range(N)]
    obs, _ = envs.reset(seed=20)
    for i, single in enumerate(singles):
        assert_close(obs[i], single.reset(seed=20 + i)[0])
    for actions in random_actions("takecover", 20):
        obs, _, terminated, truncated, _ = envs.step(actions)
        for i, single in enumerate(singles):
            s_obs, _, s_term, s_trunc, _ = single.step(int(actions[i]))
            assert_close(obs[i], s_obs)
            assert (terminated[i], truncated[i]) == (s_term, s_trunc)
        if (terminated | truncated).any():
            break


def test_fused_step_with_a_mask_equals_the_heads_of_the_masked_h() -> None:
    torch.manual_seed(0)
    model = MDNRNN(MDNRNNConfig(z_size=4, action_dim=1, hidden_size=8, restart_flag=True, dropout=0.5)).eval()
    cell = FusedStep(model, 3)
    with torch.no_grad():
        cell.xh[:, :4] = torch.randn(3, 4)
        cell.action.fill_(1.0)
        mask = (torch.rand(3, 8) > 0.5).float() * 2.0
        heads = cell(mask)
        expected = model.heads(cell.h * mask)
    log_pi = heads.logits - torch.logsumexp(heads.logits, dim=-1, keepdim=True)
    torch.testing.assert_close(log_pi, expected.log_pi)
    torch.testing.assert_close(heads.mu, expected.mu)
    torch.testing.assert_close(heads.done_logit, expected.done_logit)
    unmasked = model.heads(cell.h)  # the state itself keeps the unmasked h
    assert not torch.allclose(unmasked.mu, expected.mu)


def test_m_trains_through_dropout_and_evaluates_without_it() -> None:
    torch.manual_seed(0)
    model = MDNRNN(MDNRNNConfig(z_size=4, action_dim=1, hidden_size=8, dropout=0.5))
    z, action = torch.randn(2, 5, 4), torch.randn(2, 5, 1)
    model.train()
    a, b = (model(z, action)[0].mu for _ in range(2))
    assert not torch.equal(a, b)
    model.eval()
    c, d = (model(z, action)[0].mu for _ in range(2))
    assert torch.equal(c, d)
