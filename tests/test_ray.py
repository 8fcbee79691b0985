"""The Ray backend on a real game (TakeCover seen through a tiny random world model), on a cluster started by
``ray start --head`` (fixture ``ray_cluster``): CMA-ES generations, evaluation and collection give exactly
what the local process pool gives for the same seeds, also when a Ray worker dies mid-run."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

import recipes.dagger as dagger
import training.collect as collect_module
from agents.cmaes import TrainArgs, train
from agents.evaluate import EvalArgs, evaluate
from agents.runlog import COLUMNS, read_csv
from dreamgym.controller import Controller, ControllerConfig
from dreamgym.data import list_episodes, load_arrays
from dreamgym.envs.latent import make_latent_env
from dreamgym.ray_pool import connect
from recipes.dagger import DaggerArgs, DaggerRun
from training.collect import CollectArgs, collect

LATENT_ID = "dreamgym/TakeCoverLatent-v0"
SHORT = json.dumps({"max_episode_steps": 25})


def _children(pid: int) -> list[int]:
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


def _die_once_then_play(index: int) -> tuple[int, object, float]:
    """Collection's job, except that the first attempt at episode 1 SIGKILLs its Ray worker once the episode
    is played, before it returns (recording the worker's children, its game engine, in a marker file)."""
    played = collect_module._play_one(index)
    marker = Path(collect_module._worker["args"].out).parent / "died"
    if index == 1 and not marker.exists():
        marker.write_text(json.dumps(_children(os.getpid())))
        os.kill(os.getpid(), signal.SIGKILL)
    return played


def _gone(pids: list[int], wait: float = 10.0) -> bool:
    deadline = time.monotonic() + wait
    while any(Path(f"/proc/{p}").exists() and "Z" not in Path(f"/proc/{p}/stat").read_text().split()[2]
              for p in pids):  # fmt: skip
        if time.monotonic() > deadline:
            return False
        time.sleep(0.2)
    return True


def controller_collection(bundle: Path, folder: Path, episodes: int) -> CollectArgs:
    """Collection args of a random controller playing short TakeCover episodes through ``bundle``, and their
    shards collected by the process pool into ``folder``/pool/eps."""
    env = make_latent_env("takecover", bundle, obs_mode="zch", max_episode_steps=25)
    config = ControllerConfig.for_env(env, LATENT_ID)
    env.close()
    params = np.random.default_rng(0).normal(0, 1.0, config.n_params).astype(np.float32)
    Controller(config, params).save(folder / "c")
    args = CollectArgs(game="takecover", episodes=episodes, workers=2, max_steps=25, controller=str(folder / "c"),
                       world_model=str(bundle), obs_mode="zch")  # fmt: skip
    collect(dataclasses.replace(args, out=str(folder / "pool" / "eps")))
    return args


def assert_same_shards(folder: Path, other: Path, episodes: int) -> None:
    ours, theirs = list_episodes(folder), list_episodes(other)
    assert [p.name for p in theirs] == [p.name for p in ours] and len(ours) == episodes
    for a, b in zip(ours, theirs, strict=True):
        left, right = load_arrays(a, (), None), load_arrays(b, (), None)
        assert left.keys() == right.keys()
        for key in left:
            np.testing.assert_array_equal(left[key], right[key], err_msg=f"{a.name}: {key}")


@pytest.mark.slow
def test_cmaes_and_evaluation_on_ray_equal_the_pool(
    ray_cluster: str, tiny_bundle: Callable[..., Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)  # ViZDoom writes _vizdoom.ini into the working folder
    bundle = str(tiny_bundle("takecover"))
    base = TrainArgs(env=LATENT_ID, world_model=bundle, env_kwargs=SHORT, popsize=4, episodes=1, generations=2,
                     eval_every=0, device="cpu", seed=1, backend="pool", workers=2)  # fmt: skip
    runs = {}
    for name, args in {"pool": base, "ray": dataclasses.replace(base, backend="auto", ray_address=ray_cluster)}.items():
        out = train(dataclasses.replace(args, out=str(tmp_path / name)))
        history = read_csv(out / "fitness.csv")[:, [i for i, c in enumerate(COLUMNS) if c != "seconds"]]
        report = evaluate(EvalArgs(env=LATENT_ID, world_model=bundle, env_kwargs=SHORT, device="cpu",
                                   backend=args.backend, ray_address=args.ray_address, controller=str(out / "mean"),
                                   episodes=3, seed=10))  # fmt: skip
        runs[name] = (history, Controller.load(out / "mean").params, report)
    (pool_rows, pool_mean, pool_report), (ray_rows, ray_mean, ray_report) = runs["pool"], runs["ray"]
    assert len(ray_rows) == 2
    np.testing.assert_array_equal(ray_rows, pool_rows)  # best, mean, worst fitness, sigma, steps
    np.testing.assert_array_equal(ray_mean, pool_mean)
    assert ray_report["backend"] == "ray" and pool_report["backend"] == "pool"
    assert ray_report["returns"] == pool_report["returns"] and ray_report["lengths"] == pool_report["lengths"]


@pytest.mark.slow
def test_collect_on_ray_writes_the_pools_shards_though_a_worker_dies(
    ray_cluster: str, tiny_bundle: Callable[..., Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A controller plays 3 short TakeCover episodes: the Ray run, whose worker is SIGKILLed during episode
    1 (its game engine goes with it), writes the same shards as the process pool."""
    monkeypatch.chdir(tmp_path)
    args = controller_collection(tiny_bundle("takecover"), tmp_path, episodes=3)
    monkeypatch.setattr(collect_module, "_play_one", _die_once_then_play)
    collect(dataclasses.replace(args, out=str(tmp_path / "ray" / "eps"), ray_address=ray_cluster))

    engines = json.loads((tmp_path / "ray" / "died").read_text())
    assert engines and _gone(engines)  # the dead worker's VizDoom engine did not outlive it
    assert_same_shards(tmp_path / "pool" / "eps", tmp_path / "ray" / "eps", 3)


def test_dagger_plays_its_rounds_on_the_ray_address(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """recipes.dagger hands --ray-address to every collection and scoring it runs (the stages themselves are
    stubbed: collection and evaluation on Ray are tested above)."""
    calls: list[tuple[str, str | None, str]] = []

    def fake_collect(args: CollectArgs) -> dict:
        calls.append(("collect", args.ray_address, "-"))
        return {}

    def fake_evaluate(args: EvalArgs) -> dict:
        calls.append(("evaluate", args.ray_address, args.backend))
        return {"mean": 1.0, "std": 0.0, "episodes": args.episodes}

    monkeypatch.setattr(dagger.collect, "collect", fake_collect)
    monkeypatch.setattr(dagger.encode, "encode", lambda args: None)
    monkeypatch.setattr(dagger.evaluate, "evaluate", fake_evaluate)
    monkeypatch.setattr(dagger, "episode_returns", lambda *a: [0.0])
    monkeypatch.setattr(DaggerRun, "fit", lambda self, folder: (folder.mkdir(parents=True), {})[1])
    monkeypatch.setattr(dagger, "copy_controller", lambda source, target: None)
    monkeypatch.setattr(dagger, "plot_rounds", lambda *a: None)
    args = DaggerArgs(game="carracing", out=str(tmp_path / "run"), demos=2, rounds=1, episodes_per_round=2,
                      eval_episodes=2, ray_address="HEAD:6379")  # fmt: skip
    DaggerRun(args).run()
    assert calls and {(c[1], c[2]) for c in calls} == {("HEAD:6379", "-"), ("HEAD:6379", "ray")}


def _descendants(pid: int) -> list[int]:
    """Every process below ``pid`` (children, theirs, ...)."""
    found, todo = [], [pid]
    while todo:
        children = _children(todo.pop())
        found += children
        todo += children
    return found


def _mark_then_play(index: int) -> tuple[int, object, float]:
    """Collection's job, after writing which process plays episode ``index`` into a marker file and waiting a
    second (so that the episode is under way when the test kills the node it runs on)."""
    markers = Path(collect_module._worker["args"].out).parent / "markers"
    markers.mkdir(exist_ok=True)
    (markers / f"{index}_{os.getpid()}").touch()
    time.sleep(1.0)
    return collect_module._play_one(index)


@pytest.mark.slow
def test_collection_on_ray_loses_nothing_when_a_worker_node_dies(
    ray_cluster: str, tiny_bundle: Callable[..., Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A second node joins the cluster as a worker machine would (``ray start --address``). While it plays an
    episode the whole node is SIGKILLed (its ``ray start``, raylet, workers and game engines: the machine is
    gone); the run still writes every shard, the same as the process pool's."""
    monkeypatch.chdir(tmp_path)
    args = controller_collection(tiny_bundle("takecover"), tmp_path, episodes=8)

    ray = connect(ray_cluster)
    alive = sum(node["Alive"] for node in ray.nodes())
    node = subprocess.Popen(
        [str(Path(sys.executable).parent / "ray"), "start", "--block", f"--address={ray_cluster}",
         "--node-ip-address=127.0.0.1", "--num-cpus=2", "--disable-usage-stats"],
        env=dict(os.environ, PYTHONPATH=str(Path(__file__).parent), RAY_USAGE_STATS_ENABLED="0",
                 RAY_kill_child_processes_on_worker_exit_with_raylet_subreaper="true"),
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )  # fmt: skip
    killed: list[int] = []

    def kill_the_node_once_it_plays() -> None:
        markers = tmp_path / "ray" / "markers"
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            on_node = set(_descendants(node.pid))
            if any(int(m.name.split("_")[1]) in on_node for m in markers.glob("*_*")):
                killed.extend([node.pid, *on_node])
                for pid in killed:
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGKILL)
                return
            time.sleep(0.05)

    try:
        deadline = time.monotonic() + 60
        while sum(n["Alive"] for n in ray.nodes()) < alive + 1:
            assert time.monotonic() < deadline, "the second node did not join"
            time.sleep(0.5)
        killer = threading.Thread(target=kill_the_node_once_it_plays)
        killer.start()
        monkeypatch.setattr(collect_module, "_play_one", _mark_then_play)
        collect(dataclasses.replace(args, out=str(tmp_path / "ray" / "eps"), ray_address=ray_cluster))
        killer.join()
    finally:
        for pid in [node.pid, *_descendants(node.pid)]:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        node.wait()
    assert killed and _gone(killed)  # the node died while it played an episode
    assert_same_shards(tmp_path / "pool" / "eps", tmp_path / "ray" / "eps", 8)
