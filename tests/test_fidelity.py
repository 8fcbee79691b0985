"""World-model fidelity: the library math (dreamgym.fidelity) and the report script (training.fidelity)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import make_tiny_world_model

from dreamgym.controller import Controller, ControllerConfig
from dreamgym.envs import DreamVectorEnv
from dreamgym.fidelity import (
    brier,
    expected_length,
    mixture_mean,
    open_loop,
    pearson,
    ranks,
    reliability,
    restart_flags,
    slope,
    spearman,
    teacher_force,
)
from dreamgym.tools.model_card import write_model_card
from dreamgym.world_model import WorldModel
from tests.test_training import write_episodes
from training.fidelity import JSON_FILE, PNG_FILE, FidelityArgs, fidelity, main

pytestmark = pytest.mark.usefixtures("one_torch_thread")


# --- the math -----------------------------------------------------------------------------------------
def test_correlations_and_slope_on_known_numbers() -> None:
    assert pearson([1, 2, 3], [2, 4, 6]) == pytest.approx(1.0)
    assert pearson([1, 2, 3], [3, 2, 1]) == pytest.approx(-1.0)
    assert spearman([1, 2, 3, 4], [1, 8, 27, 64]) == pytest.approx(1.0)
    # one swapped pair of 8: rho = 1 - 6 * 2 / (8 * 63)
    assert spearman(range(8), [0, 1, 2, 3, 4, 5, 7, 6]) == pytest.approx(1 - 12 / 504)
    assert ranks([10, 20, 20, 5]).tolist() == [2.0, 3.5, 3.5, 1.0]
    assert slope([0, 1, 2], [1, 3, 5]) == pytest.approx(2.0)
    undefined = [pearson([1], [2]), pearson([1, 1], [1, 2]), spearman([3, 3, 3], [1, 2, 3]), slope([2, 2], [1, 3])]
    assert undefined == [None] * 4


def test_calibration_metrics() -> None:
    p = np.array([0.0, 0.05, 0.15, 0.95, 1.0])
    y = np.array([0, 0, 1, 1, 1])
    bins = reliability(p, y, 10)
    assert [b["count"] for b in bins] == [2, 1, 0, 0, 0, 0, 0, 0, 0, 2]
    assert bins[0]["observed"] == 0 and bins[9]["observed"] == 1 and bins[4]["mean_predicted"] is None
    assert brier(p, y) == pytest.approx(np.mean((p - y) ** 2))
    assert expected_length(np.zeros(7)) == 7  # never dies: every step is taken
    assert expected_length(np.ones(7)) == 1  # dies on the first step
    q, T = 0.1, 30
    assert expected_length(np.full(T, q)) == pytest.approx((1 - (1 - q) ** T) / q)


def test_teacher_force_matches_stepping_and_open_loop_starts_from_it() -> None:
    model = make_tiny_world_model("takecover", seed=1)
    m = model.mdnrnn
    T, starts = 9, [0, 3, 7]
    z = torch.randn(T, m.config.z_size, generator=torch.Generator().manual_seed(0))
    actions = model.game.encode_action(torch.tensor([0, 1, 2, 1, 0, 2, 2, 1, 0]))
    heads, (h, c) = teacher_force(m, z, actions, starts)
    state, restart, logits, states = m.initial_state(1), restart_flags(T), [], []
    with torch.inference_mode():
        for t in range(T):
            states.append(state)
            out, state = m.step(z[t : t + 1], actions[t : t + 1], restart[t : t + 1], state)
            logits.append(out.done_logit[0])
    torch.testing.assert_close(heads.done_logit, torch.stack(logits), atol=1e-5, rtol=1e-5)
    for i, t0 in enumerate(starts):
        torch.testing.assert_close(h[i], states[t0][0][0], atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(c[i], states[t0][1][0], atol=1e-5, rtol=1e-5)
    # the first open-loop step feeds the real z_t0, so it predicts what teacher forcing predicts at t0
    t0 = torch.tensor(starts)
    window = torch.stack([actions[t0], actions[(t0 + 1).clamp(max=T - 1)]], dim=1)
    flags = torch.stack([restart[t0], torch.zeros(3)], dim=1)
    preds = open_loop(m, z[t0], (h, c), window, flags, "mean")
    assert preds.shape == (3, 2, m.config.z_size)
    torch.testing.assert_close(preds[:, 0], mixture_mean(heads)[t0], atol=1e-5, rtol=1e-5)
    a = open_loop(m, z[t0], (h, c), window, flags, "sample", 1.15, torch.Generator().manual_seed(3))
    b = open_loop(m, z[t0], (h, c), window, flags, "sample", 1.15, torch.Generator().manual_seed(3))
    assert torch.equal(a, b)


# --- the report script --------------------------------------------------------------------------------
def save_controller(folder: Path, model: WorldModel, real: float, seed: int) -> Path:
    """A random TakeCover controller for ``model``'s dream (obs zh), with a real evaluation beside it."""
    envs = DreamVectorEnv(1, model, obs_mode="zh", device="cpu")
    config = ControllerConfig.for_env(envs)
    params = np.random.default_rng(seed).normal(size=config.n_params).astype(np.float32)
    Controller(config, params).save(folder)
    (folder / "evaluation_real.json").write_text(json.dumps({"mean": real, "returns": [real]}))
    return folder


@pytest.fixture
def setup(tmp_path: Path, tiny_bundle: Callable[..., Path]) -> tuple[Path, Path]:
    """(tiny takecover bundle, folder of 5 tiny episodes)."""
    episodes = tmp_path / "episodes"
    write_episodes(episodes, 5, min_len=12, max_len=40)
    return tiny_bundle("takecover"), episodes


def test_report_has_every_part_in_range(setup: tuple[Path, Path], tmp_path: Path) -> None:
    bundle, episodes = setup
    model = WorldModel.load(bundle)
    a = save_controller(tmp_path / "a", model, 3.0, 0)
    b = save_controller(tmp_path / "b", model, 9.0, 1)
    d = save_controller(tmp_path / "d", model, 0.0, 2)
    (d / "evaluation_real.json").unlink()  # its real score comes from --scores only
    (tmp_path / "eval_c.json").write_text(json.dumps({"mean": 4.0}))
    scores = {"b": {"real": 7.0}, "c": {"dream": 2.0, "real": "eval_c.json"}, "d": {"real": 5.0},
              "only_real": {"real": 1.0}}
    (tmp_path / "scores.json").write_text(json.dumps(scores))
    args = FidelityArgs(world_model=str(bundle), episodes=str(episodes), out=str(tmp_path / "out"),
                        horizons="1,4,30", starts=3, scores=str(tmp_path / "scores.json"),
                        controllers=f"a={a},b={b},d={d}", dream_episodes=4, threads=1)  # fmt: skip
    report = fidelity(args)
    assert (tmp_path / "out" / PNG_FILE).stat().st_size > 0
    assert json.loads((tmp_path / "out" / JSON_FILE).read_text()) == json.loads(json.dumps(report))
    loop = report["open_loop"]
    assert loop["horizons"] == [1, 4, 30] and loop["feedback"] == ["mean", "sample"]
    assert len(loop["n"]) == 3 and loop["n"][0] == 15 and loop["n"][0] >= loop["n"][1] >= loop["n"][2]
    assert set(loop["latent_mse"]) == {"mean", "sample", "copy_last_z"}
    assert set(loop["frame_mse"]) == {"mean", "sample", "copy_last_z", "v_reconstruction"}
    for series in [*loop["latent_mse"].values(), *loop["frame_mse"].values()]:
        assert len(series) == 3
        assert all((v is None) == (n == 0) for v, n in zip(series, loop["n"], strict=True))
        assert all(v >= 0 for v in series if v is not None)
    out = report["episode_outcome"]
    assert out["kind"] == "length" and out["head"] == "done" and out["n"] == 5
    assert all(1 <= p["predicted"] <= p["true"] for p in out["points"])
    for r in (out["pearson"], out["spearman"], out["baseline"]["pearson"]):
        assert r is None or -1 <= r <= 1
    done = report["done_calibration"]
    assert len(done["bins"]) == 10 and sum(b["count"] for b in done["bins"]) == done["steps"]
    assert done["steps"] == report["episodes"]["steps"]
    assert 0 <= done["brier"] <= 1 and 0 <= done["base_rate_brier"] <= 1
    assert done["base_rate"] == pytest.approx(5 / done["steps"])  # one death per episode
    scatter = report["dream_vs_real"]
    assert [p["name"] for p in scatter["points"]] == ["a", "b", "c", "d"] and scatter["n"] == 4
    assert scatter["skipped"] == ["only_real"]
    by_name = {p["name"]: p for p in scatter["points"]}
    assert by_name["a"]["real"] == 3.0 and by_name["b"]["real"] == 7.0  # --scores wins over evaluation_real.json
    assert by_name["d"]["real"] == 5.0
    assert by_name["c"] == {**by_name["c"], "dream": 2.0, "real": 4.0}
    assert by_name["a"]["dream"] > 0 and by_name["a"]["dream_source"].startswith("scored here")
    assert not scatter["target"]["met"]
    again = fidelity(args)
    assert json.dumps(again, sort_keys=True) == json.dumps(report, sort_keys=True)  # deterministic


def test_scatter_of_known_numbers_and_the_target_line(
    setup: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bundle, episodes = setup
    real = [0, 1, 2, 3, 4, 5, 7, 6]
    scores = {f"c{i}": {"dream": float(i), "real": float(r)} for i, r in enumerate(real)}
    (tmp_path / "scores.json").write_text(json.dumps(scores))
    main(["--world-model", str(bundle), "--episodes", str(episodes), "--out", str(tmp_path / "out"), "--scores",
          str(tmp_path / "scores.json"), "--feedback", "mean", "--horizons", "2", "--threads", "1"])  # fmt: skip
    report = json.loads((tmp_path / "out" / JSON_FILE).read_text())
    scatter = report["dream_vs_real"]
    assert scatter["n"] == 8 and scatter["spearman"] == pytest.approx(1 - 12 / 504)
    assert scatter["pearson"] == pytest.approx(float(np.corrcoef(range(8), real)[0, 1]))
    assert scatter["slope"] == pytest.approx(float(np.polyfit(range(8), real, 1)[0]))
    assert scatter["target"]["met"]
    assert "dream-vs-real Spearman = 0.976 over 8 controllers (target >= 0.9 over >= 8): MET" in capsys.readouterr().out
    assert report["open_loop"]["feedback"] == ["mean"] and report["open_loop"]["temperature"] is None
    assert set(report["open_loop"]["latent_mse"]) == {"mean", "copy_last_z"}


def test_bad_arguments_fail_clearly(setup: tuple[Path, Path], tmp_path: Path, tiny_bundle: Callable[..., Path]) -> None:
    bundle, episodes = setup
    (tmp_path / "empty").mkdir()
    (tmp_path / "bad.json").write_text(json.dumps({"x": {"dream": "nope.json", "real": 1}}))
    (tmp_path / "odd.json").write_text(json.dumps({"x": {"sim": 1}}))
    (tmp_path / "lonely").mkdir()
    save_controller(tmp_path / "lonely", WorldModel.load(bundle), 1.0, 0)
    (tmp_path / "lonely" / "evaluation_real.json").unlink()

    def run(**overrides: object) -> None:
        fields = {"world_model": str(bundle), "episodes": str(episodes), "out": str(tmp_path / "out")} | overrides
        fidelity(FidelityArgs(**fields))  # type: ignore[arg-type]

    cases = [
        ({"episodes": str(tmp_path / "missing")}, FileNotFoundError, "no such folder"),
        ({"episodes": str(tmp_path / "empty")}, ValueError, "no episode shards"),
        ({"horizons": "0,5"}, ValueError, "positive integers"),
        ({"horizons": "one"}, ValueError, "positive integers"),
        ({"starts": 0}, ValueError, "--starts"),
        ({"max_episodes": 0}, ValueError, "--max-episodes"),
        ({"temperature": 0.0}, ValueError, "temperature"),
        ({"scores": str(tmp_path / "none.json")}, FileNotFoundError, "--scores"),
        ({"scores": str(tmp_path / "bad.json")}, FileNotFoundError, "nope.json"),
        ({"scores": str(tmp_path / "odd.json")}, ValueError, "'dream' and/or 'real'"),
        ({"controllers": "justaname"}, ValueError, "NAME=DIR"),
        ({"controllers": f"x={tmp_path / 'empty'}"}, FileNotFoundError, "controller.json"),
        ({"controllers": f"x={tmp_path / 'lonely'}"}, FileNotFoundError, "no real score"),
        ({"world_model": str(tiny_bundle("carracing"))}, ValueError, "'takecover' episodes"),
        ({"world_model": str(tmp_path / "nowhere")}, FileNotFoundError, "no world model"),
    ]
    for overrides, error, message in cases:
        with pytest.raises(error, match=message):
            run(**overrides)
    assert not (tmp_path / "out").exists()


def test_model_card_shows_a_fidelity_report(setup: tuple[Path, Path], tmp_path: Path) -> None:
    bundle, episodes = setup
    plain = write_model_card(bundle, episodes=episodes, frames=2, dims=2, steps=3).read_text()
    assert "## Fidelity" not in plain and not (bundle / "fidelity.png").exists()
    with pytest.raises(ValueError, match="no fidelity.json"):
        write_model_card(bundle, episodes=episodes, fidelity=tmp_path)
    (tmp_path / "scores.json").write_text(json.dumps({"a": {"dream": 1.0, "real": 2.0}, "b": {"dream": 3, "real": 5}}))
    args = FidelityArgs(world_model=str(bundle), episodes=str(episodes), out=str(tmp_path / "fid"), horizons="1,3",
                        scores=str(tmp_path / "scores.json"), threads=1)  # fmt: skip
    report = fidelity(args)
    text = write_model_card(bundle, episodes=episodes, frames=2, dims=2, steps=3, fidelity=tmp_path / "fid").read_text()
    assert text.replace(text[text.index("## Fidelity") : text.index("## Known limits")], "") == plain
    assert "![fidelity](fidelity.png)" in text and "| open-loop latent MSE (mean), h1 / h3 |" in text
    assert text.index("(sample at tau 1.15), h1 / h3 |") < text.index("latent MSE (copy_last_z)")
    assert f"{report['done_calibration']['brier']:.4g}" in text and "| 1 / 1 / 1.5 (2) |" in text
    assert (bundle / "fidelity.png").read_bytes() == (tmp_path / "fid" / "fidelity.png").read_bytes()
