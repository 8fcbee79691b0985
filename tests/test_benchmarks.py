"""The benchmark suite runs end to end at tiny sizes (no speed is asserted), its report merges devices, and the
fused dream step it measures computes exactly what M's reference step computes."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from conftest import make_tiny_world_model

import benchmarks.run as bench_run
from benchmarks import report
from benchmarks.dream_steps import DreamSizes
from benchmarks.run import BENCHMARKS
from benchmarks.timing import Row, interleaved_rates
from dreamgym.envs import DreamVectorEnv
from dreamgym.models.mdnrnn import FusedStep, MDNOutput, sample_from_logits, sample_mixture

EXPECTED = {"dream_takecover", "dream_carracing", "latent_takecover", "latent_carracing", "train_takecover",
            "cmaes_takecover", "memory_takecover"}  # fmt: skip


@pytest.mark.slow
def test_quick_run_writes_every_benchmark_with_finite_ratios(run_module, tmp_path: Path) -> None:
    run_module("benchmarks.run", "--preset", "quick", "--threads", "1", "--out", "out", timeout=300)
    out = tmp_path / "out"
    run = json.loads((out / report.RESULTS).read_text())["runs"]["cpu"]
    assert {row["benchmark"] for row in run["rows"]} == EXPECTED
    assert run["settings"]["benchmarks"] == list(BENCHMARKS)
    assert run["machine"]["cores"] >= 1 and run["machine"]["torch_threads"] == 1 and run["machine"]["versions"]["torch"]
    for row in run["rows"]:
        assert math.isfinite(row["ratio"]) and row["ratio"] > 0, row
        assert math.isfinite(row["value"]) and row["value"] > 0, row
    table = (out / report.TABLE).read_text()
    assert "| benchmark | figure | baseline | target |" in table and "dream_carracing" in table
    for name in ("dream_takecover", "dream_carracing"):
        assert (out / f"{name}_cpu.png").stat().st_size > 1000


def test_a_second_device_adds_its_columns_and_keeps_the_first(tmp_path: Path) -> None:
    machine = {"cpu": "test cpu", "cores": 2, "cpu_flags": [], "gpu": None, "torch_threads": 2, "date": "today",
               "versions": {"torch": "2", "numpy": "2", "gymnasium": "1", "python": "3"}}  # fmt: skip
    row = Row("dream_takecover", "VectorEnv steps/s, N=1024", 30_000.0, "steps/s", "bare loop", 25_000.0, 1.2, 0.7)
    report.save_run(tmp_path, "cpu", machine, {}, [row], {})
    gpu_row = Row("dream_takecover", "VectorEnv steps/s, N=1024", 3e6, "steps/s", "bare loop", 5e6, 0.6, 0.7)
    runs = report.save_run(tmp_path, "cuda", {**machine, "gpu": "test gpu"}, {}, [gpu_row], {})
    assert list(runs) == ["cpu", "cuda"]
    table = report.markdown(runs)
    assert "ratio (cpu)" in table and "ratio (cuda)" in table and "GPU test gpu" in table
    line = next(line for line in table.splitlines() if line.startswith("| dream_takecover"))
    assert "| ≥ 0.7 |" in line and "| 1.2 | yes |" in line and "| 0.6 | **no** |" in line


def test_interleaved_rates_counts_work_per_second() -> None:
    calls = []
    rates = interleaved_rates({"a": lambda: calls.append("a") or 10.0, "b": lambda: calls.append("b") or 1.0}, 3, 0.0)
    assert calls == ["a", "b"] * 4  # one warm-up call each, then alternating rounds
    assert rates["a"].median > rates["b"].median > 0


@pytest.mark.parametrize("game", ["takecover", "carracing"])
def test_fused_step_matches_m_step(game: str) -> None:
    """Same h, c and heads as MDNRNN.step on [z, action, restart] (mixture logits up to a constant per dim)."""
    model = make_tiny_world_model(game)
    m, cfg = model.mdnrnn, model.config.mdnrnn
    g = torch.Generator().manual_seed(0)
    z, action = torch.randn(5, cfg.z_size, generator=g), torch.randn(5, cfg.action_dim, generator=g)
    restart = torch.tensor([1.0, 0, 0, 1, 0])
    h, c = torch.randn(5, cfg.hidden_size, generator=g), torch.randn(5, cfg.hidden_size, generator=g)
    with torch.inference_mode():
        ref, (ref_h, ref_c) = m.step(z, action, restart, (h, c))
        cell = FusedStep(m, 5)
        cell.z.copy_(z)
        cell.h.copy_(h)
        cell.c.copy_(c)
        cell.action.copy_(action)
        if cfg.restart_flag:
            cell.restart.copy_(restart)
        out = cell()
    torch.testing.assert_close(cell.h, ref_h)
    torch.testing.assert_close(cell.c, ref_c)
    torch.testing.assert_close(out.logits.log_softmax(-1), ref.log_pi)
    for name in ("mu", "log_sigma", "reward", "done_logit"):
        torch.testing.assert_close(getattr(out, name), getattr(ref, name))


def test_fused_step_repacks_when_m_changes_in_place() -> None:
    model = make_tiny_world_model()
    cell = FusedStep(model.mdnrnn, 3)
    with torch.inference_mode():
        cell.z.normal_()
        before = cell().mu.clone()
        model.mdnrnn.load_state_dict(make_tiny_world_model(seed=1).mdnrnn.state_dict())
        cell.h.zero_()
        cell.c.zero_()
        after = cell().mu
        ref, _ = model.mdnrnn.step(cell.z, cell.action, cell.restart, model.mdnrnn.initial_state(3))
    assert not torch.allclose(before, after)
    torch.testing.assert_close(after, ref.mu)


def test_sampling_ignores_logit_offsets_and_memory_layout() -> None:
    g = torch.Generator().manual_seed(0)
    logits, mu, log_sigma = (torch.randn(4, 3, 5, generator=g) for _ in range(3))
    tau, uniform, noise = torch.tensor([0.5, 1.0, 1.15, 2.0]), torch.rand(4, 3, generator=g), torch.randn(4, 3)
    ref = sample_mixture(MDNOutput(logits.log_softmax(-1), mu, log_sigma, tau, tau), tau, uniform, noise)
    shifted = logits + torch.randn(4, 3, 1, generator=g) * 10
    # (B, Z, K) views of (B, K, Z) storage, as FusedStep gives them
    strided = [t.transpose(1, 2).contiguous().transpose(1, 2) for t in (shifted, mu, log_sigma)]
    torch.testing.assert_close(sample_from_logits(*strided, tau, uniform, noise), ref)


def test_dream_env_follows_weights_changed_after_it_was_made() -> None:
    a, b = make_tiny_world_model(seed=0), make_tiny_world_model(seed=1)
    envs, fresh = DreamVectorEnv(4, a, device="cpu"), DreamVectorEnv(4, b, device="cpu")
    actions = [0, 1, 2, 1]
    envs.reset(seed=0)
    envs.step(actions)  # the fused step has packed a's weights
    a.load_state_dict(b.state_dict())
    envs.reset(seed=0)
    fresh.reset(seed=0)
    torch.testing.assert_close(torch.as_tensor(envs.step(actions)[0]), torch.as_tensor(fresh.step(actions)[0]))


def test_the_dream_benchmark_goes_to_64k_envs_on_a_gpu(monkeypatch: pytest.MonkeyPatch) -> None:
    """The GPU column's dream sizes are N = 1k ... 64k (the CPU's stop at 4k), chosen by the device alone."""
    seen: dict[str, tuple[int, ...]] = {}

    def fake_run(model: object, sizes: DreamSizes, device: torch.device) -> tuple[list[Row], dict]:
        seen[device.type] = sizes.num_envs
        return [], {}

    monkeypatch.setattr(bench_run.dream_steps, "run", fake_run)
    monkeypatch.setattr(bench_run, "load_or_random", lambda *args: None)
    args = bench_run.BenchArgs()
    for device in ("cpu", "cuda"):  # a cuda device object needs no GPU; nothing runs on it here
        bench_run.run_one("dream_takecover", args, bench_run.PRESETS["full"], torch.device(device), {})
    assert seen == {"cpu": (1, 16, 256, 1024, 4096), "cuda": (1024, 4096, 16384, 65536)}
