"""The batched dream VectorEnv: equal to N single dreams, autoreset modes, seeding, temperature, tensors, errors."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch
from conftest import TINY_Z, make_tiny_world_model
from gymnasium.vector import AutoresetMode
from gymnasium.vector.utils import batch_space

import dreamgym  # noqa: F401  (registers the ids)
from dreamgym.envs import DreamEnv, DreamVectorEnv

N = 6
CAP = 7  # short episodes: both terminations (p ~ 0.1 per step) and truncations happen within 40 steps


def random_actions(game: str, steps: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    if game == "takecover":
        return rng.integers(3, size=(steps, N))
    return rng.uniform([-1, 0, 0], [1, 1, 1], size=(steps, N, 3)).astype(np.float32)


def assert_close(vector_obs: np.ndarray, single_obs: np.ndarray) -> None:
    np.testing.assert_allclose(vector_obs, single_obs, rtol=1e-5, atol=1e-5)  # batched vs 1-row matmul rounding


def test_make_vec_gives_the_batched_env(tiny_bundle) -> None:
    envs = gym.make_vec("dreamgym/TakeCoverDream-v0", num_envs=N, world_model=tiny_bundle(), device="cpu")
    assert isinstance(envs, DreamVectorEnv) and envs.num_envs == N
    assert envs.metadata["autoreset_mode"] is AutoresetMode.NEXT_STEP
    assert envs.metadata["dreamgym_game"] == "takecover"
    assert (
        envs.single_observation_space
        == gym.make("dreamgym/TakeCoverDream-v0", world_model=tiny_bundle()).observation_space
    )
    assert envs.action_space == gym.spaces.MultiDiscrete([3] * N)
    obs, _ = envs.reset(seed=0)
    assert envs.observation_space.contains(obs)


@pytest.mark.parametrize("game", ["takecover", "carracing"])
def test_next_step_autoreset_matches_single_envs(game: str) -> None:
    """Env i seeded s + i plays exactly what DreamEnv seeded s + i plays, across episode ends."""
    model = make_tiny_world_model(game)
    envs = DreamVectorEnv(N, model, device="cpu", max_episode_steps=CAP)
    singles = [DreamEnv(model, max_episode_steps=CAP) for _ in range(N)]
    obs, _ = envs.reset(seed=10)
    for i, single in enumerate(singles):
        assert_close(obs[i], single.reset(seed=10 + i)[0])
    ended = np.zeros(N, bool)
    counts = {"terminated": 0, "truncated": 0}
    for actions in random_actions(game, 40):
        obs, rewards, terminated, truncated, _ = envs.step(actions)
        for i, single in enumerate(singles):
            if ended[i]:  # NEXT_STEP: this step is the reset, reward 0, not done
                assert_close(obs[i], single.reset()[0])
                assert rewards[i] == 0.0 and not terminated[i] and not truncated[i]
                continue
            s_obs, s_reward, s_term, s_trunc, _ = single.step(actions[i])
            assert_close(obs[i], s_obs)
            assert rewards[i] == pytest.approx(s_reward, abs=1e-5)
            assert (terminated[i], truncated[i]) == (s_term, s_trunc)
        counts["terminated"] += int(terminated.sum())
        counts["truncated"] += int(truncated.sum())
        ended = terminated | truncated
    assert counts["terminated"] > 0 and counts["truncated"] > 0


def test_same_step_autoreset_reports_final_obs_and_matches_single_envs() -> None:
    model = make_tiny_world_model()
    envs = DreamVectorEnv(N, model, device="cpu", max_episode_steps=CAP, autoreset_mode=AutoresetMode.SAME_STEP)
    assert envs.metadata["autoreset_mode"] is AutoresetMode.SAME_STEP
    singles = [DreamEnv(model, max_episode_steps=CAP) for _ in range(N)]
    envs.reset(seed=[5, 50, 500, 5000, 50000, 500000])
    for single, seed in zip(singles, [5, 50, 500, 5000, 50000, 500000], strict=True):
        single.reset(seed=seed)
    finals = 0
    for actions in random_actions("takecover", 30):
        obs, rewards, terminated, truncated, infos = envs.step(actions)
        done = terminated | truncated
        assert np.array_equal(infos.get("_final_obs", np.zeros(N, bool)), done)
        for i, single in enumerate(singles):
            s_obs, s_reward, s_term, s_trunc, _ = single.step(actions[i])
            assert (terminated[i], truncated[i], rewards[i]) == (s_term, s_trunc, s_reward)
            if done[i]:
                assert_close(infos["final_obs"][i], s_obs)
                s_obs, _ = single.reset()
                finals += 1
            assert_close(obs[i], s_obs)
    assert finals > 0


def test_reset_seeds_each_env() -> None:
    model = make_tiny_world_model()
    envs = DreamVectorEnv(3, model, device="cpu")
    by_int, _ = envs.reset(seed=4)
    by_list, _ = envs.reset(seed=[4, 5, 6])
    np.testing.assert_array_equal(by_int, by_list)
    partly, _ = envs.reset(seed=[4, None, 6])  # None: env 1 continues its own stream
    np.testing.assert_array_equal(partly[[0, 2]], by_int[[0, 2]])
    assert not np.array_equal(partly[1], by_int[1])
    with pytest.raises(ValueError, match="2 seeds for 3 envs"):
        envs.reset(seed=[1, 2])
    for seed, bad in [([1, -2, 3], -2), ([0, 2**64, 1], 2**64), (-1, -1), (2**64 - 2, 2**64)]:
        with pytest.raises(ValueError, match=rf"seed must be an integer in \[0, 2\*\*64\), got {bad}"):
            envs.reset(seed=seed)  # the last: env 2 would take seed 2**64
    np.testing.assert_array_equal(envs.reset(seed=[4, 5, 6])[0], by_int)


def test_return_tensors_gives_the_same_numbers_as_autograd_friendly_tensors() -> None:
    model = make_tiny_world_model()
    numpy_envs = DreamVectorEnv(N, model, device="cpu", max_episode_steps=CAP)
    torch_envs = DreamVectorEnv(N, model, device="cpu", max_episode_steps=CAP, return_tensors=True)
    np_obs, _ = numpy_envs.reset(seed=1)
    t_obs, _ = torch_envs.reset(seed=1)
    assert isinstance(t_obs, torch.Tensor) and t_obs.device.type == "cpu"
    np.testing.assert_array_equal(t_obs.numpy(), np_obs)
    for actions in random_actions("takecover", 12):
        np_out = numpy_envs.step(actions)
        t_out = torch_envs.step(torch.as_tensor(actions))
        for a, b in zip(np_out[:4], t_out[:4], strict=True):
            assert isinstance(b, torch.Tensor)
            np.testing.assert_array_equal(b.numpy(), a)
    weight = torch.ones(t_out[0].shape[1], requires_grad=True)
    (t_out[0] @ weight).sum().backward()  # not an inference tensor: an agent can train on it
    assert weight.grad is not None


def test_temperature_changes_the_spread_of_next_z() -> None:
    """From one identical state, the spread of sampled next z across envs grows with tau."""
    model = make_tiny_world_model(num_initial=1)
    model.initial_logvar.fill_(-40.0)  # every env starts from the same z
    n = 512

    def spread(temperature: float | list[float]) -> np.ndarray:
        envs = DreamVectorEnv(n, model, device="cpu", temperature=temperature)
        envs.reset(seed=0)
        obs = envs.step(np.ones(n, np.int64))[0][:, :TINY_Z]
        return np.stack([obs[: n // 2].std(axis=0).mean(), obs[n // 2 :].std(axis=0).mean()])

    low, mid, high = spread(0.05), spread(1.0), spread(2.0)
    assert low.max() < 0.5 * mid.min() and mid.max() < high.min()
    mixed = spread([0.05] * (n // 2) + [2.0] * (n // 2))  # per-env temperatures in one batch
    assert mixed[0] == pytest.approx(low[0], rel=0.2) and mixed[1] == pytest.approx(high[1], rel=0.2)


def test_temperature_attribute_and_validation() -> None:
    envs = DreamVectorEnv(3, make_tiny_world_model(), device="cpu", temperature=[0.5, 1.0, 2.0])
    np.testing.assert_allclose(envs.temperature, [0.5, 1.0, 2.0])
    envs.temperature = 1.3
    np.testing.assert_allclose(envs.temperature, [1.3] * 3)
    for bad, match in [([1.0, 2.0], r"shape \(3,\)"), (0.0, "finite and > 0"), ([1.0, float("nan"), 1.0], "finite")]:
        with pytest.raises(ValueError, match=match):
            envs.temperature = bad
    for bad in ["hot", ["a", "b", "c"], [1.0, "x", 1.0], None, torch.ones(3, dtype=torch.bool)]:
        with pytest.raises(TypeError, match="temperature must be a real number"):
            envs.temperature = bad
    np.testing.assert_allclose(envs.temperature, [1.3] * 3)


@pytest.mark.parametrize(
    "game,actions,error,match",
    [
        ("takecover", np.ones(N - 1, np.int64), ValueError, "shape"),
        ("takecover", np.ones((N, 1), np.int64), ValueError, "shape"),
        ("takecover", np.ones(N), TypeError, "integers"),
        ("takecover", np.array([0, 1, 2, 3, 1, 1]), ValueError, r"\[3\] are out of range"),
        ("carracing", np.full((N, 3), np.nan, np.float32), ValueError, "NaN or inf"),
        ("carracing", torch.zeros(N, 2), ValueError, "shape"),
    ],
)
def test_bad_actions_raise_one_clear_error(game: str, actions, error: type, match: str) -> None:
    envs = DreamVectorEnv(N, make_tiny_world_model(game), device="cpu")
    with pytest.raises(gym.error.ResetNeeded, match="reset"):
        envs.step(actions)
    envs.reset(seed=0)
    with pytest.raises(error, match=match):
        envs.step(actions)


def test_bad_constructor_arguments_raise() -> None:
    model = make_tiny_world_model()
    with pytest.raises(ValueError, match="num_envs"):
        DreamVectorEnv(0, model, device="cpu")
    with pytest.raises(ValueError, match="NEXT_STEP or SAME_STEP"):
        DreamVectorEnv(2, model, device="cpu", autoreset_mode=AutoresetMode.DISABLED)
    with pytest.raises(ValueError, match="temperature"):
        DreamVectorEnv(2, model, device="cpu", temperature=[1.0, -1.0])


def test_gymnasium_vector_wrappers_accept_it() -> None:
    """RecordEpisodeStatistics needs NEXT_STEP autoreset; a survival return equals the episode length."""
    envs = gym.wrappers.vector.RecordEpisodeStatistics(DreamVectorEnv(N, make_tiny_world_model(), device="cpu"))
    envs.reset(seed=0)
    episodes = []
    for actions in random_actions("takecover", 40):
        *_, infos = envs.step(actions)
        if "episode" in infos:
            mask = infos["_episode"]
            episodes += list(zip(infos["episode"]["r"][mask], infos["episode"]["l"][mask], strict=True))
    assert episodes and all(r == length for r, length in episodes)


def test_render_decodes_every_env() -> None:
    envs = DreamVectorEnv(3, make_tiny_world_model(), device="cpu", render_mode="rgb_array")
    envs.reset(seed=0)
    frames = envs.render()
    assert frames.shape == (3, 64, 64, 3) and frames.dtype == np.uint8
    single = DreamEnv(make_tiny_world_model(), render_mode="rgb_array")
    single.reset(seed=1)
    assert np.abs(frames[1].astype(int) - single.render().astype(int)).max() <= 1


@pytest.mark.parametrize("game", ["takecover", "carracing"])  # M with and without the restart flag
@pytest.mark.parametrize("mode", [AutoresetMode.NEXT_STEP, AutoresetMode.SAME_STEP])
def test_subset_continues_exactly_like_its_envs(game: str, mode: AutoresetMode) -> None:
    """Taken mid-episode (some envs ended, some about to autoreset), a subset plays what its envs play here."""
    temperatures = [0.5, 0.8, 1.0, 1.2, 1.5, 2.0]
    envs = DreamVectorEnv(N, make_tiny_world_model(game), device="cpu", max_episode_steps=CAP,
                          temperature=temperatures, autoreset_mode=mode, render_mode="rgb_array")  # fmt: skip
    envs.reset(seed=3)
    actions = random_actions(game, 40, seed=1)
    for t, a in enumerate(actions):  # until an env's episode has just ended (NEXT_STEP: its reset is pending)
        _, _, terminated, truncated, _ = envs.step(a)
        if t >= 2 and (terminated | truncated).any():
            break
    just_ended = int(np.flatnonzero(terminated | truncated)[0])
    others = [i for i in (4, 1, 3) if i != just_ended]
    picked = [others[0], just_ended, others[1]]  # not in increasing order
    sub = envs.subset(np.array(picked))
    assert sub.num_envs == 3 and sub.observation_space.shape == (3, envs.single_observation_space.shape[0])
    assert sub.action_space == batch_space(envs.single_action_space, 3)
    assert sub.metadata == envs.metadata and sub.render_mode == "rgb_array"
    np.testing.assert_allclose(sub.temperature, np.array(temperatures)[picked])
    np.testing.assert_array_equal(sub.render(), envs.render()[picked])
    ended = 0
    for a in actions[t + 1 :]:  # both stepped: the subset shares no state with the original
        full, part = envs.step(a), sub.step(a[picked])
        assert_close(part[0], full[0][picked])
        # rewards from M's head can differ in the last bit: a batch of 3 and one of 6 may round differently
        assert_close(part[1], full[1][picked])
        for mine, theirs in zip(part[2:4], full[2:4], strict=True):
            np.testing.assert_array_equal(mine, theirs[picked])
        ended_here = part[4].get("_final_obs", np.zeros(3, bool))
        np.testing.assert_array_equal(ended_here, full[4].get("_final_obs", np.zeros(N, bool))[picked])
        for i in np.flatnonzero(ended_here):  # SAME_STEP only
            assert_close(part[4]["final_obs"][i], full[4]["final_obs"][picked[i]])
        ended += int(part[2].sum() + part[3].sum())
    assert ended >= 3  # the subset's envs ended episodes and went on into new ones


def test_subset_of_a_subset_keeps_tensors_and_seeding() -> None:
    model = make_tiny_world_model()
    envs = DreamVectorEnv(N, model, device="cpu", max_episode_steps=CAP, return_tensors=True)
    envs.reset(seed=0)
    sub = envs.subset(torch.tensor([5, 2, 0])).subset([2, 0])  # envs 0 and 5
    obs, reward, *_ = sub.step(torch.ones(2, dtype=torch.int64))
    assert isinstance(obs, torch.Tensor) and isinstance(reward, torch.Tensor)
    assert_close(obs.numpy(), envs.step(torch.ones(N, dtype=torch.int64))[0].numpy()[[0, 5]])
    reseeded, _ = sub.reset(seed=7)  # a subset is a whole VectorEnv: env i is seeded 7 + i
    np.testing.assert_array_equal(reseeded.numpy(), DreamVectorEnv(2, model, device="cpu").reset(seed=7)[0])


@pytest.mark.parametrize(
    "indices,error,match",
    [
        ([], ValueError, "non-empty 1-D"),
        ([[0, 1]], ValueError, "non-empty 1-D"),
        ([0, N], ValueError, rf"\[{N}\] are out of range for {N} envs"),
        ([-1], ValueError, "out of range"),
        ([1, 2, 1], ValueError, "distinct"),
        ([0.0, 1.0], TypeError, "integers"),
        (np.ones(N, bool), TypeError, "flatnonzero"),
    ],
)
def test_subset_rejects_bad_indices(indices, error: type, match: str) -> None:
    envs = DreamVectorEnv(N, make_tiny_world_model(), device="cpu")
    with pytest.raises(error, match=match):
        envs.subset(indices)


def test_env_i_draws_exactly_the_numbers_of_a_single_env_seeded_s_plus_i() -> None:
    """What holds bit for bit (the states only to float rounding; see dreamgym.envs.dream): the random draws."""
    model = make_tiny_world_model()
    envs = DreamVectorEnv(N, model, device="cpu", dropout=0.2)
    envs.reset(seed=30)
    singles = [DreamEnv(model, dropout=0.2) for _ in range(N)]
    for i, single in enumerate(singles):
        single.reset(seed=30 + i)
    for _ in range(3):
        batch = envs.core.rng.draw()
        for i, single in enumerate(singles):
            assert torch.equal(batch[i], single.core.rng.draw()[0])
