"""Training stages on tiny synthetic episodes: exact resume (SIGKILL and crash), encode, M batches, bundle, pipeline."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import types
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

import recipes.pipeline as pipeline_module
import training.mdnrnn as mdnrnn_module
from dreamgym.checkpoint import CheckpointError
from dreamgym.data import Episode, episode_path, list_episodes, load_episode, save_arrays, save_episode
from dreamgym.models.mdnrnn import MDNRNN, MDNRNNConfig
from dreamgym.runs import check_args, hand_down
from dreamgym.world_model import WorldModel
from recipes.dagger import DaggerArgs
from training.bundle import BundleArgs, build_bundle, initial_latents
from training.common import (
    MODEL_FILE,
    STATE_FILE,
    frozen_split,
    load_state,
    resolve_device,
    run_finished,
    save_model,
    save_state,
)
from training.encode import EncodeArgs, encode, encode_frames, load_latents
from training.mdnrnn import (
    EpisodeSeries,
    MDNRNNArgs,
    epoch_batches,
    f1_scores,
    init_head_biases,
    load_mdnrnn,
    make_batch,
    train_mdnrnn,
)
from training.mdnrnn import build as build_mdnrnn
from training.vae import ARCHITECTURE as VAE_ARCHITECTURE
from training.vae import VAEArgs, load_vae, train_vae

REPO = Path(__file__).resolve().parents[1]


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def write_episodes(folder: Path, count: int, seed: int = 0, min_len: int = 12, max_len: int = 30) -> list[Path]:
    """Synthetic TakeCover-like shards: a coloured square drifting with the action, death at the end."""
    rng = np.random.default_rng(seed)
    for i in range(count):
        steps = int(rng.integers(min_len, max_len + 1))
        actions = rng.integers(0, 3, size=steps)
        x = np.clip(20 + np.cumsum(actions - 1) * 2, 0, 48)
        frames = np.full((steps, 64, 64, 3), 80, dtype=np.uint8)
        for t in range(steps):
            frames[t, 30:46, x[t] : x[t] + 16] = (200, 60, 40)
        terminated = np.zeros(steps, dtype=bool)
        terminated[-1] = True
        save_episode(
            episode_path(folder, i),
            Episode(frames, actions, np.ones(steps, np.float32), terminated, np.zeros(steps, bool), i, "takecover"),
        )
    return list_episodes(folder)


def tiny_vae_args(episodes: Path, out: Path, **overrides: Any) -> VAEArgs:
    args = VAEArgs(out=str(out), episodes=str(episodes), device="cpu", threads=1, z_size=8, batch_size=16,
                   epochs=1, eval_frames=16, grid_frames=4, holdout=0.2)  # fmt: skip
    return dataclasses.replace(args, **overrides)


def tensors_equal(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


# --- common ---------------------------------------------------------------------------------------


def test_resolve_device() -> None:
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(ValueError, match="unknown device"):
        resolve_device("gpu-please")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="no CUDA"):
            resolve_device("cuda")


def test_run_state_round_trip_is_exact(tmp_path: Path) -> None:
    model = torch.nn.Linear(3, 2)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    sched = torch.optim.lr_scheduler.ExponentialLR(opt, 0.9)
    model(torch.randn(4, 3)).sum().backward()
    opt.step()
    sched.step()
    gen = torch.Generator().manual_seed(7)
    state = {"model": model.state_dict(), "optimizer": opt.state_dict(), "scheduler": sched.state_dict(),
             "generator": gen.get_state(), "progress": {"epoch": 1, "history": [{"x": 0.5}]}}  # fmt: skip
    save_state(tmp_path / STATE_FILE, state)
    loaded = load_state(tmp_path / STATE_FILE)
    assert tensors_equal(loaded["model"], state["model"])
    assert loaded["optimizer"]["param_groups"] == state["optimizer"]["param_groups"]  # int keys, tuple betas
    for key, value in state["optimizer"]["state"].items():
        assert tensors_equal(loaded["optimizer"]["state"][key], value)
    assert loaded["scheduler"] == state["scheduler"]
    assert torch.equal(loaded["generator"], state["generator"])
    assert loaded["progress"] == state["progress"]
    assert load_state(tmp_path / STATE_FILE, tensors=False)["model"]["weight"] is None


def test_corrupt_run_state_raises_checkpoint_error(tmp_path: Path) -> None:
    path = tmp_path / STATE_FILE
    save_state(path, {"progress": {"finished": False}, "w": torch.zeros(100)})
    path.write_bytes(path.read_bytes()[:60])
    with pytest.raises(CheckpointError, match="corrupt"):
        load_state(path)


def test_changed_settings_are_refused_on_resume(tmp_path: Path) -> None:
    args = VAEArgs(out=str(tmp_path))
    check_args(tmp_path, args)
    check_args(tmp_path, dataclasses.replace(args, device="cuda", threads=4, checkpoint_minutes=1.0))
    with pytest.raises(ValueError, match="lr: run has 0.0001, command has 0.001"):
        check_args(tmp_path, dataclasses.replace(args, lr=1e-3))


def test_split_is_frozen_at_the_first_start(tmp_path: Path) -> None:
    paths = write_episodes(tmp_path / "eps", 10, max_len=12)
    train, held = frozen_split(tmp_path, paths, 0.2, seed=0, max_train=5)
    assert len(train) == 5 and len(held) == 2 and not set(train) & set(held)
    write_episodes(tmp_path / "eps", 14, max_len=12)  # more episodes arrive while the run is paused
    assert frozen_split(tmp_path, list_episodes(tmp_path / "eps"), 0.2, 0, 5) == (train, held)


# --- V ----------------------------------------------------------------------------------------------


def test_vae_stage_writes_its_outputs_and_skips_when_finished(tmp_path: Path) -> None:
    write_episodes(tmp_path / "eps", 5)
    args = tiny_vae_args(tmp_path / "eps", tmp_path / "vae", max_steps=3)
    result = train_vae(args)
    out = tmp_path / "vae"
    assert result["step"] == 3 and 0 < result["recon_mse"] < 1
    for name in ("model.safetensors", "config.json", "eval.json", "recon_epoch_001.png", "split.json", "args.json"):
        assert (out / name).is_file(), name
    assert list((out / "tb").iterdir())
    assert load_vae(out).config.z_size == 8
    assert json.loads((out / "config.json").read_text())["provenance"]["train_seconds"] > 0
    stamp = (out / STATE_FILE).stat().st_mtime_ns
    assert train_vae(args) == result  # finished: a no-op
    assert (out / STATE_FILE).stat().st_mtime_ns == stamp
    with pytest.raises(ValueError, match="max_steps"):
        train_vae(dataclasses.replace(args, max_steps=4))


def run_vae_cli(args: VAEArgs) -> subprocess.Popen:
    flags = [f"--{k.replace('_', '-')}={v}" for k, v in dataclasses.asdict(args).items() if v is not None]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    cmd = [sys.executable, "-m", "training.vae", *flags]
    return subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


@pytest.mark.slow
def test_vae_killed_with_sigkill_resumes_to_identical_weights(tmp_path: Path) -> None:
    write_episodes(tmp_path / "eps", 6)
    plain = tiny_vae_args(tmp_path / "eps", tmp_path / "plain", max_steps=8, checkpoint_steps=2)
    killed = dataclasses.replace(plain, out=str(tmp_path / "killed"))
    proc = run_vae_cli(killed)
    state = tmp_path / "killed" / STATE_FILE
    deadline = time.monotonic() + 120
    while not state.is_file() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    progress = load_state(state, tensors=False)["progress"]
    assert 0 < progress["step"] < 8 and not progress["finished"], "the kill must land mid-run"
    resumed = run_vae_cli(killed)
    uninterrupted = run_vae_cli(plain)
    for proc in (resumed, uninterrupted):
        assert proc.wait() == 0, proc.stderr.read()[-2000:] if proc.stderr else ""
    assert run_finished(tmp_path / "killed")
    assert (tmp_path / "killed" / MODEL_FILE).read_bytes() == (tmp_path / "plain" / MODEL_FILE).read_bytes()


# --- encode -----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def trained_vae(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(episodes folder, V run folder) of a 2-step tiny V."""
    root = tmp_path_factory.mktemp("vae_run")
    write_episodes(root / "eps", 6)
    threads = torch.get_num_threads()
    train_vae(tiny_vae_args(root / "eps", root / "vae", max_steps=2))  # sets one thread
    torch.set_num_threads(threads)
    return root / "eps", root / "vae"


def test_encode_writes_latents_beside_the_shards_and_resumes(trained_vae: tuple[Path, Path], tmp_path: Path) -> None:
    episodes, vae_dir = trained_vae
    out = encode(EncodeArgs(vae=str(vae_dir), episodes=str(episodes), device="cpu", batch_size=7))
    assert out == episodes.resolve().parent / "latents" / "vae"
    assert [p.name for p in list_episodes(out)] == [p.name for p in list_episodes(episodes)]
    shard = load_episode(list_episodes(episodes)[2])
    latents = load_latents(list_episodes(out)[2])
    mu, logvar = encode_frames(load_vae(vae_dir), shard.frames, torch.device("cpu"), 256)
    np.testing.assert_allclose(latents.mu, mu, atol=1e-5)
    np.testing.assert_allclose(latents.logvar, logvar, atol=1e-5)
    assert latents.mu.dtype == np.float32 and latents.mu.shape == (len(shard), 8)
    np.testing.assert_array_equal(latents.actions, shard.actions)
    np.testing.assert_array_equal(latents.terminated, shard.terminated)
    # Resume: an existing file is kept, a missing one is re-encoded.
    first, last = list_episodes(out)[0], list_episodes(out)[-1]
    stamp = first.stat().st_mtime_ns
    last.unlink()
    encode(EncodeArgs(vae=str(vae_dir), episodes=str(episodes), device="cpu"))
    assert last.is_file() and first.stat().st_mtime_ns == stamp


def test_encode_refuses_latents_of_another_v(trained_vae: tuple[Path, Path], tmp_path: Path) -> None:
    episodes, vae_dir = trained_vae
    out = tmp_path / "latents"
    encode(EncodeArgs(vae=str(vae_dir), episodes=str(episodes), out=str(out), device="cpu"))
    other = tmp_path / "other_vae"
    other.mkdir()
    for name in ("config.json", "model.safetensors"):
        (other / name).write_bytes((vae_dir / name).read_bytes())
    vae = load_vae(other)
    with torch.no_grad():
        vae.fc_mu.bias.add_(1.0)
    save_model(other, vae, VAE_ARCHITECTURE, vae.config, {})
    with pytest.raises(ValueError, match="other V weights"):
        encode(EncodeArgs(vae=str(other), episodes=str(episodes), out=str(out), device="cpu"))


def test_encode_with_a_bundle_uses_its_v(trained_vae: tuple[Path, Path], tiny_bundle, tmp_path: Path) -> None:
    episodes, _ = trained_vae
    bundle = tiny_bundle("takecover")
    out = encode(EncodeArgs(vae=str(bundle), episodes=str(episodes), out=str(tmp_path / "latents"), device="cpu"))
    shard = load_episode(list_episodes(episodes)[1])
    mu, _ = encode_frames(WorldModel.load(bundle).vae, shard.frames, torch.device("cpu"), 256)
    np.testing.assert_allclose(load_latents(list_episodes(out)[1]).mu, mu, atol=1e-5)
    with pytest.raises(FileNotFoundError, match="neither a V run folder nor a world-model bundle"):
        encode(EncodeArgs(vae=str(tmp_path / "nowhere"), episodes=str(episodes), device="cpu"))


# --- M ----------------------------------------------------------------------------------------------


def series(length: int, z: int = 3) -> EpisodeSeries:
    mu = np.arange(length * z, dtype=np.float32).reshape(length, z)
    done = np.zeros(length, bool)
    done[-1] = True
    return EpisodeSeries(
        mu, np.full((length, z), -40.0, np.float32), np.full(length, 2), np.ones(length, np.float32), done
    )


def test_make_batch_starts_every_row_at_its_episode_start() -> None:
    short, long = series(3), series(9)
    batch = make_batch([short, long.cut(4)], "takecover", torch.Generator(), torch.device("cpu"))
    assert batch["z"].shape == (2, 5, 3) and batch["action"].shape == (2, 4, 1)
    torch.testing.assert_close(batch["z"][0, :3], torch.from_numpy(short.mu))  # sigma ~ 0: z = mu
    torch.testing.assert_close(batch["z"][1], torch.from_numpy(long.mu[:5]))
    assert batch["restart"].tolist() == [[1, 0, 0, 0], [1, 0, 0, 0]]
    assert batch["step_mask"].tolist() == [[True, True, True, False], [True] * 4]
    assert batch["z_mask"].tolist() == [[True, True, False, False], [True] * 4]  # no z after the last step
    assert batch["done"].tolist() == [[0, 0, 1, 0], [0, 0, 0, 0]]  # the cut episode's death is beyond the cut
    assert batch["action"][0, :, 0].tolist() == [1.0, 1.0, 1.0, -1.0]  # takecover: a - 1 (padding is masked)


def test_f1_scores() -> None:
    predicted = torch.tensor([True, True, False, False])
    actual = torch.tensor([True, False, True, False])
    scores = f1_scores(predicted, actual)
    assert scores == {"done_precision": 0.5, "done_recall": 0.5, "done_f1": 0.5}


class Crash(RuntimeError):
    pass


def crash_after(steps: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """Makes the next M run die after ``steps`` optimizer steps (as a kill would, minus the signal)."""
    real = mdnrnn_module.build

    def build(args: MDNRNNArgs, out: Path, device: torch.device):
        trainable = real(args, out, device)
        inner, done = trainable.batches, [0]

        def batches(epoch: int, start: int):
            for batch in inner(epoch, start):
                if done[0] == steps:
                    raise Crash
                done[0] += 1
                yield batch

        trainable.batches = batches
        return trainable

    monkeypatch.setattr(mdnrnn_module, "build", build)


@pytest.fixture(scope="module")
def latents(trained_vae: tuple[Path, Path]) -> Path:
    episodes, vae_dir = trained_vae
    return encode(EncodeArgs(vae=str(vae_dir), episodes=str(episodes), device="cpu"))


def tiny_m_args(latents: Path, out: Path) -> MDNRNNArgs:
    return MDNRNNArgs(out=str(out), latents=str(latents), device="cpu", threads=1, hidden_size=16, seq_len=30,
                      batch_size=2, epochs=3, holdout=0.2, checkpoint_steps=2)  # fmt: skip


def test_mdnrnn_init_from_continues_the_parent_and_keeps_its_heldout_episodes(latents: Path, tmp_path: Path) -> None:
    files = list_episodes(latents)
    folder = tmp_path / "latents"
    folder.mkdir()
    for path in files[: len(files) - 2]:
        shutil.copy(path, folder / path.name)
    parent = dataclasses.replace(tiny_m_args(folder, tmp_path / "parent"), epochs=1)
    train_mdnrnn(parent)
    for i, path in enumerate(files[-2:] * 2):  # four episodes new to the folder
        shutil.copy(path, folder / f"episode_{900 + i:06d}.npz")
    child = dataclasses.replace(parent, out=str(tmp_path / "child"), init_from=parent.out)
    built = build_mdnrnn(child, tmp_path / "child", torch.device("cpu"))
    assert tensors_equal(built.model.state_dict(), load_mdnrnn(parent.out).state_dict())
    old, new = (json.loads((tmp_path / d / "split.json").read_text()) for d in ("parent", "child"))
    assert set(old["holdout"]) <= set(new["holdout"]) and set(old["train"]) <= set(new["train"])
    assert set(new["train"]) | set(new["holdout"]) == {str(p) for p in list_episodes(folder)}
    assert built.provenance["init_from"] == parent.out
    other = dataclasses.replace(child, out=str(tmp_path / "other"), hidden_size=8)
    with pytest.raises(CheckpointError, match="--init-from .* differs"):
        build_mdnrnn(other, tmp_path / "other", torch.device("cpu"))
    # dropout has no weights: a child may add it to its parent's M
    dropped = build_mdnrnn(dataclasses.replace(child, out=str(tmp_path / "dropped"), dropout=0.2),
                           tmp_path / "dropped", torch.device("cpu"))  # fmt: skip
    assert dropped.config.dropout == 0.2
    assert tensors_equal(dropped.model.state_dict(), load_mdnrnn(parent.out).state_dict())


def test_mdnrnn_init_from_a_bundle_starts_from_its_m_and_bundle_keeps_its_v(
    trained_vae: tuple[Path, Path], latents: Path, tmp_path: Path
) -> None:
    """The iteration from a shipped world model: a new M from the bundle's M, bundled with the bundle's V."""
    parent = dataclasses.replace(tiny_m_args(latents, tmp_path / "parent"), epochs=1)
    train_mdnrnn(parent)
    first = build_bundle(BundleArgs(vae=str(trained_vae[1]), mdnrnn=parent.out, latents=str(latents),
                                    out=str(tmp_path / "bundle"), num_initial=4))  # fmt: skip
    child = dataclasses.replace(parent, out=str(tmp_path / "child"), init_from=str(tmp_path / "bundle"))
    built = build_mdnrnn(child, tmp_path / "child", torch.device("cpu"))
    assert tensors_equal(built.model.state_dict(), first.mdnrnn.state_dict())
    assert (tmp_path / "child" / "split.json").is_file()  # drawn afresh: a bundle records no split
    second = build_bundle(BundleArgs(vae=str(tmp_path / "bundle"), mdnrnn=parent.out, latents=str(latents),
                                     out=str(tmp_path / "bundle2"), num_initial=4))  # fmt: skip
    assert tensors_equal(second.vae.state_dict(), first.vae.state_dict())
    with pytest.raises(FileNotFoundError, match="--init-from .* neither"):
        build_mdnrnn(dataclasses.replace(child, out=str(tmp_path / "x"), init_from=str(tmp_path / "missing")),
                     tmp_path / "x", torch.device("cpu"))  # fmt: skip


def test_mdnrnn_crash_and_resume_equals_uninterrupted(
    latents: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    plain = tiny_m_args(latents, tmp_path / "plain")
    expected = train_mdnrnn(plain)
    crashed = dataclasses.replace(plain, out=str(tmp_path / "crashed"))
    with monkeypatch.context() as patch:
        crash_after(5, patch)
        with pytest.raises(Crash):
            train_mdnrnn(crashed)
    assert load_state(tmp_path / "crashed" / STATE_FILE, tensors=False)["progress"]["step"] == 4
    assert train_mdnrnn(crashed) == expected
    assert (tmp_path / "crashed" / MODEL_FILE).read_bytes() == (tmp_path / "plain" / MODEL_FILE).read_bytes()
    for key in ("nll", "done_precision", "done_recall", "done_f1", "done_f1_logit0", "done_rate_true"):
        assert np.isfinite(expected[key]), key
    assert expected["done_rate_true"] > 0  # seq_len 30 keeps whole episodes, deaths included
    assert expected["step"] == 3 * 3 and len(expected["history"]) == 3  # 5 train episodes, batch 2, 3 epochs


# --- pipeline + bundle ------------------------------------------------------------------------------


def test_bundle_initial_latents_come_from_the_asked_frame(tmp_path: Path) -> None:
    """--initial-step k stores frame k of the episodes longer than k (CarRacing's dreams skip its zoom-in)."""
    paths = write_episodes(tmp_path / "episodes", 6, min_len=12, max_len=30)
    latents = tmp_path / "latents"
    for path in paths:
        episode = load_episode(path)
        n = len(episode)
        mu = np.arange(n, dtype=np.float32)[:, None] + np.zeros((n, 4), np.float32) + 1000 * int(path.stem[-1])
        save_arrays(latents / path.name, {"mu": mu, "logvar": -mu, "actions": episode.actions,
                                          "rewards": episode.rewards, "terminated": episode.terminated,
                                          "truncated": episode.truncated})  # fmt: skip
    lengths = {int(p.stem[-1]): len(load_episode(p)) for p in paths}
    k = sorted(lengths.values())[2]  # the two shortest episodes are too short
    mu, logvar = initial_latents(latents, 10, seed=0, step=k)
    longer = [i for i, n in sorted(lengths.items()) if n > k]
    assert mu[:, 0].tolist() == [1000.0 * i + k for i in longer] and torch.equal(logvar, -mu)
    with pytest.raises(ValueError, match="no episode .* longer than --initial-step 99"):
        initial_latents(latents, 10, seed=0, step=99)


def test_quick_pipeline_shape_on_synthetic_data(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Every stage runs in order on a tiny preset (collection replaced by synthetic shards, the controller
    scored in the real game); a rerun skips them."""
    tiny = pipeline_module.sizes(
        6,
        VAEArgs(epochs=1, max_steps=2, lr=1e-4),
        MDNRNNArgs(hidden_size=16, seq_len=20, batch_size=2, epochs=1),
        BundleArgs(num_initial=4),
        pipeline_module.cmaes_sizes(generations=1, popsize=4, episodes=1, eval_episodes=2),
    )
    monkeypatch.chdir(tmp_path)  # ViZDoom writes _vizdoom.ini into the working folder
    monkeypatch.setitem(pipeline_module.PRESETS, "tiny", tiny)
    collected: list[int] = []

    def fake_collect(ctx: pipeline_module.Context) -> None:
        collected.append(len(write_episodes(ctx.episodes, ctx.preset.collect.episodes)))

    stages = [(n, fake_collect if n == "collect" else f) for n, f in pipeline_module.STAGES]
    monkeypatch.setattr(pipeline_module, "STAGES", stages)
    args = pipeline_module.PipelineArgs(preset="tiny", out=str(tmp_path / "run"), device="cpu", threads=1)
    ctx = pipeline_module.run_pipeline(args)
    model = WorldModel.load(ctx.world_model)
    assert model.config.game == "takecover" and model.config.mdnrnn.hidden_size == 16
    assert model.initial_mu.shape == (4, 64)
    firsts = {tuple(load_latents(p).mu[0].tolist()) for p in list_episodes(ctx.latents)}
    assert {tuple(row.tolist()) for row in model.initial_mu} <= firsts
    report = json.loads((ctx.out / "evaluation.json").read_text())
    assert report["env"] == "dreamgym/TakeCoverLatent-v0" and len(report["returns"]) == 2
    assert "real-game score of the dream-trained controller" in capsys.readouterr().out
    timings = json.loads((ctx.out / "timings.json").read_text())
    assert set(timings) == {n for n, _ in stages} - {"sweep"}  # no sweep in this preset
    assert all(t["wall_s"] > 0 and t["cpu_s"] >= 0 for t in timings.values())
    stamp = (ctx.mdnrnn / MODEL_FILE).stat().st_mtime_ns
    pipeline_module.run_pipeline(args)
    assert (ctx.mdnrnn / MODEL_FILE).stat().st_mtime_ns == stamp
    # --world-model: only the controller is trained (in the given bundle) and scored
    given = dataclasses.replace(args, out=str(tmp_path / "given"), world_model=str(ctx.world_model))
    pipeline_module.run_pipeline(given)
    assert sorted(p.name for p in (tmp_path / "given").iterdir()) == ["controller", "evaluation.json", "timings.json"]
    # a preset with a sweep: its controller stage trains the sweep's run at the pipeline's temperature
    sweep = dataclasses.replace(tiny.cmaes, taus="1.15,0.5")
    monkeypatch.setitem(pipeline_module.PRESETS, "tiny-sweep", dataclasses.replace(tiny, cmaes=sweep))
    swept = dataclasses.replace(given, out=str(tmp_path / "swept"), preset="tiny-sweep")
    pipeline_module.run_pipeline(swept)
    assert sorted(p.name for p in (tmp_path / "swept").iterdir()) == ["evaluation.json", "sweep", "timings.json"]
    table = (tmp_path / "swept" / "sweep" / "sweep.md").read_text()
    assert table.index("| 0.50 |") < table.index("| 1.15 |")  # sorted by tau, trained in the order given
    report = json.loads((tmp_path / "swept" / "evaluation.json").read_text())
    assert report["controller"] == str(tmp_path / "swept" / "sweep" / "tau1.15" / "mean")
    with pytest.raises(ValueError, match="--stop-after vae names a stage that --world-model skips"):
        pipeline_module.run_pipeline(dataclasses.replace(given, stop_after="vae"))
    with pytest.raises(ValueError, match="unknown preset"):
        pipeline_module.run_pipeline(dataclasses.replace(args, preset="huge"))


@pytest.mark.slow
def test_pipeline_trains_the_controller_by_dagger(
    tiny_bundle, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """``--trainer dagger``: the controller stage runs recipes.dagger in the real game with the preset's DAgger
    sizes, the evaluate stage scores its best round, and the dream-temperature sweep does not run."""
    dagger = DaggerArgs(
        demos=2, rounds=1, episodes_per_round=2, eval_episodes=2, max_steps=40, expert_share=0.5, expert='{"gas": 0.2}'
    )
    quick = pipeline_module.PRESETS["quick"]
    tiny = dataclasses.replace(quick, evaluate=dataclasses.replace(quick.evaluate, episodes=3),
                               cmaes=dataclasses.replace(quick.cmaes, taus="1"), dagger=dagger)  # fmt: skip
    monkeypatch.setitem(pipeline_module.PRESETS, "tiny", tiny)
    scored: list[Any] = []

    def fake_evaluate(args: Any) -> dict[str, Any]:  # the real game's 1,000-step episodes are not this test's
        scored.append(args)
        return {"mean": 1.0, "std": 0.0, "returns": [1.0] * args.episodes}

    only_here = types.SimpleNamespace(**{**vars(pipeline_module.evaluate), "evaluate": fake_evaluate})  # DAgger's own
    monkeypatch.setattr(pipeline_module, "evaluate", only_here)  # scoring stays real
    args = pipeline_module.PipelineArgs(game="carracing", preset="tiny", out=str(tmp_path / "run"), threads=1,
                                        world_model=str(tiny_bundle("carracing")), trainer="dagger")  # fmt: skip
    ctx = pipeline_module.run_pipeline(args)
    run = json.loads((ctx.out / "dagger" / "dagger.json").read_text())
    assert [r["round"] for r in run["rounds"]] == [0, 1] and run["rounds"][-1]["episodes_total"] == 4
    assert json.loads((ctx.out / "dagger" / "args.json").read_text())["expert"] == '{"gas": 0.2}'
    (call,) = scored
    assert call.controller == str(ctx.out / "dagger" / "best") and call.episodes == 3
    assert (ctx.out / "dagger" / "best" / "controller.json").is_file()
    assert "real-game score of the DAgger-trained controller" in capsys.readouterr().out
    assert set(json.loads((ctx.out / "timings.json").read_text())) == {"controller", "evaluate"}


def test_a_run_hands_its_settings_to_the_stages_that_have_them() -> None:
    run = pipeline_module.PipelineArgs(seed=3, device="cpu", threads=1, workers=5, out="run")
    encoding = hand_down(EncodeArgs(batch_size=7), run, out="latents")  # no seed, no workers
    assert (encoding.device, encoding.threads, encoding.batch_size, encoding.out) == ("cpu", 1, 7, "latents")
    m = hand_down(MDNRNNArgs(epochs=2), run, seed=9)  # fields given win
    assert (m.seed, m.device, m.threads, m.epochs, m.out) == (9, "cpu", 1, 2, MDNRNNArgs().out)
    ctx = pipeline_module.Context(run, pipeline_module.PRESETS["quick"], Path("run"))
    assert (ctx.sweep_args().workers, ctx.sweep_args().generations, ctx.sweep_args().out) == (5, 30, "run/sweep")


def test_pipeline_dagger_settings_that_cannot_work_fail_before_any_stage(tmp_path: Path) -> None:
    args = pipeline_module.PipelineArgs(out=str(tmp_path / "run"), trainer="dagger")
    with pytest.raises(ValueError, match="'takecover' has no scripted expert"):
        pipeline_module.run_pipeline(args)
    with pytest.raises(ValueError, match="preset 'paper' has no DAgger sizes"):
        pipeline_module.run_pipeline(dataclasses.replace(args, game="carracing", preset="paper"))
    with pytest.raises(ValueError, match="--trainer must be cmaes or dagger, got 'ppo'"):
        pipeline_module.run_pipeline(dataclasses.replace(args, trainer="ppo"))
    assert not (tmp_path / "run").exists()


def test_epoch_batches_cover_every_episode_once_with_little_padding() -> None:
    lengths = np.random.default_rng(0).integers(100, 1000, size=103)
    batches = epoch_batches(lengths, 8, 4, np.random.default_rng(1))
    assert len(batches) == 13
    assert sorted(np.concatenate(batches).tolist()) == list(range(103))
    padded = sum(lengths[b].max() * len(b) for b in batches)
    assert padded < 1.3 * lengths.sum()
    again = epoch_batches(lengths, 8, 4, np.random.default_rng(1))
    assert all(np.array_equal(a, b) for a, b in zip(batches, again, strict=True))


def test_game_presets_and_the_paper_controller_input_per_game() -> None:
    """``--game carracing --preset session`` gets CarRacing's own sizes (V on its first episodes only), other
    names the shared ones; the pipeline's controller sees the paper's input for the game unless told."""
    racing = pipeline_module.preset_for("carracing", "session")
    assert racing is pipeline_module.GAME_PRESETS[("carracing", "session")] and racing.vae.max_episodes is not None
    assert pipeline_module.preset_for("CarRacing-v3", "quick") is pipeline_module.PRESETS["quick"]
    assert pipeline_module.preset_for("takecover", "session") is pipeline_module.PRESETS["session"]
    with pytest.raises(ValueError, match="unknown preset 'huge'"):
        pipeline_module.preset_for("carracing", "huge")

    def obs_mode(**kw: Any) -> str:
        args = pipeline_module.PipelineArgs(**kw)
        return pipeline_module.Context(args, pipeline_module.PRESETS["quick"], Path("run")).sweep_args().obs_mode

    assert (obs_mode(game="takecover"), obs_mode(game="carracing"), obs_mode(game="carracing", obs_mode="z")) == (
        "zch",
        "zh",
        "z",
    )


def test_fresh_m_starts_its_done_and_reward_heads_at_the_data_priors() -> None:
    """Before any training step, M's calibrated P(done) is the data's done rate and its reward the mean reward,
    at an episode's first step too (left at zero, an undertrained done head ended dreams within a few steps)."""
    rng = np.random.default_rng(0)
    episodes = [
        EpisodeSeries(
            rng.normal(size=(101, 4)).astype(np.float32),
            np.zeros((101, 4), np.float32),
            rng.uniform(-1, 1, size=(100, 3)).astype(np.float32),
            rng.normal(2.0, 1.0, size=100).astype(np.float32),
            np.eye(100, dtype=bool)[99] if i < 2 else np.zeros(100, bool),
        )
        for i in range(10)
    ]
    torch.manual_seed(0)
    model = MDNRNN(MDNRNNConfig(z_size=4, hidden_size=8, done_pos_weight=10.0))
    for layer in (model.done, model.reward):
        torch.nn.init.zeros_(layer.weight)  # the bias alone: what h contributes is training's job
    init_head_biases(model, episodes)
    with torch.no_grad():
        out, _ = model.step(torch.zeros(1, 4), torch.zeros(1, 3), None, model.initial_state(1))
    assert float(model.done_probability(out.done_logit)) == pytest.approx(2 / 1000, rel=1e-4)
    assert float(out.reward) == pytest.approx(np.mean([e.rewards.mean() for e in episodes]), rel=1e-5)
