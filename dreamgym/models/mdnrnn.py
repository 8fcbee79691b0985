"""M: an LSTM over [z, action(, restart)] predicting the next z as a Gaussian mixture, plus reward and done.

One set of weights serves sequence training (:meth:`MDNRNN.forward`, cuDNN/oneDNN LSTM over (B, T))
and single-step stepping (:meth:`MDNRNN.step`, one fused ``lstm_cell`` for B envs; :class:`FusedStep`, the
same step with packed weights and preallocated buffers for the dream's hot loop).
The mixture, reward and done heads are separate linear layers on h.

Dropout (``MDNRNNConfig.dropout``, p): in training, a fresh mask on h before the heads at every step (the
recurrence itself is untouched). The dream can keep sampling such masks (``DreamEnv(dropout=p)``), so each
step comes from another member of the implicit ensemble of sub-networks and a controller cannot exploit one
model's errors (Dropout's Dream Land, Wellmer & Kwok 2021).

Done calibration: the done head is trained with BCE whose positive class is weighted by
``done_pos_weight`` (w). Such a head's sigmoid overestimates the probability by the odds factor w, so
:meth:`MDNRNN.done_probability` returns ``sigmoid(logit - log w)``, the calibrated probability the dream
samples from.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, NamedTuple

import torch
from torch import nn
from torch.nn import functional as F

from dreamgym.checkpoint import check_number

LOG_SQRT_2PI = 0.5 * math.log(2 * math.pi)

LSTMState = tuple[torch.Tensor, torch.Tensor]


@dataclass(frozen=True)
class MDNRNNConfig:
    """Sizes of M and what it predicts."""

    z_size: int = 32
    action_dim: int = 3
    hidden_size: int = 256
    num_mixtures: int = 5
    restart_flag: bool = False
    reward_head: bool = True
    done_head: bool = True
    done_pos_weight: float = 10.0
    dropout: float = 0.0
    """probability that training drops each unit of h before the heads (0: none)"""

    def __post_init__(self) -> None:
        for name in ("z_size", "action_dim", "hidden_size", "num_mixtures"):
            check_number(name, getattr(self, name), 1, integer=True)
        check_number("done_pos_weight", self.done_pos_weight, 0, exclusive=True)
        check_dropout(self.dropout)

    @property
    def input_size(self) -> int:
        return self.z_size + self.action_dim + int(self.restart_flag)


class MDNOutput(NamedTuple):
    """Heads of M for (..., ) leading dims: mixture over each latent dim, reward and done logits."""

    log_pi: torch.Tensor  # (..., Z, K) log mixture weights (log-softmaxed)
    mu: torch.Tensor  # (..., Z, K)
    log_sigma: torch.Tensor  # (..., Z, K)
    reward: torch.Tensor  # (...,) predicted reward (zeros without a reward head)
    done_logit: torch.Tensor  # (...,) done logit (very negative without a done head)


def check_dropout(p: float, name: str = "dropout") -> None:
    """Raises ValueError unless ``p`` is a number in [0, 1)."""
    if isinstance(p, bool) or not isinstance(p, (int, float)) or not 0.0 <= p < 1.0:
        raise ValueError(f"{name} must be a number in [0, 1), got {p!r}")


def check_temperature(temperature: float | torch.Tensor) -> None:
    """Raises ValueError unless every temperature is finite and > 0."""
    t = torch.as_tensor(temperature, dtype=torch.float32)
    if not bool(torch.isfinite(t).all()) or not bool((t > 0).all()):
        raise ValueError(f"temperature must be finite and > 0, got {temperature}")


class MDNRNN(nn.Module):
    def __init__(self, config: MDNRNNConfig) -> None:
        super().__init__()
        self.config = config
        z, k = config.z_size, config.num_mixtures
        self.lstm = nn.LSTM(config.input_size, config.hidden_size, batch_first=True)
        self.mdn = nn.Linear(config.hidden_size, z * k * 3)
        self.reward = nn.Linear(config.hidden_size, 1) if config.reward_head else None
        self.done = nn.Linear(config.hidden_size, 1) if config.done_head else None

    def inputs(self, z: torch.Tensor, action: torch.Tensor, restart: torch.Tensor | None) -> torch.Tensor:
        """Concatenates z (..., Z), encoded action (..., A) and, if configured, the restart flag (...)."""
        parts = [z, action]
        if self.config.restart_flag:
            if restart is None:
                raise ValueError("this M takes a restart flag (1.0 at an episode's first step)")
            parts.append(restart.to(z.dtype).unsqueeze(-1))
        return torch.cat(parts, dim=-1)

    def heads(self, h: torch.Tensor) -> MDNOutput:
        """(..., H) hidden states -> MDNOutput."""
        z, k = self.config.z_size, self.config.num_mixtures
        logits, mu, log_sigma = self.mdn(h).view(*h.shape[:-1], z, k, 3).unbind(-1)
        lead = h.shape[:-1]
        reward = self.reward(h).squeeze(-1) if self.reward is not None else h.new_zeros(lead)
        done = self.done(h).squeeze(-1) if self.done is not None else h.new_full(lead, -30.0)
        # logits - logsumexp == log_softmax; torch's CPU log_softmax over a last dim of 5 is ~10x slower.
        return MDNOutput(logits - torch.logsumexp(logits, dim=-1, keepdim=True), mu, log_sigma, reward, done)

    def forward(
        self,
        z: torch.Tensor,
        action: torch.Tensor,
        restart: torch.Tensor | None = None,
        state: LSTMState | None = None,
    ) -> tuple[MDNOutput, LSTMState]:
        """Sequence pass: z (B, T, Z), action (B, T, A), restart (B, T) -> heads for every step, final state.

        The output at step t predicts z[t+1], the reward of the transition t -> t+1 and whether it ended
        the episode. ``state=None`` starts from h = c = 0 (an episode start). In training mode the heads see
        h through dropout (``config.dropout``); the returned state never does.
        """
        h, state = self.lstm(self.inputs(z, action, restart), state)
        if self.config.dropout > 0:
            h = F.dropout(h, self.config.dropout, self.training)
        return self.heads(h), state

    def initial_state(self, batch: int, device: torch.device | str | None = None) -> LSTMState:
        """h = c = 0 for ``batch`` envs."""
        device = device or self.mdn.weight.device
        zeros = torch.zeros(batch, self.config.hidden_size, device=device, dtype=self.mdn.weight.dtype)
        return zeros, zeros.clone()

    def step(
        self, z: torch.Tensor, action: torch.Tensor, restart: torch.Tensor | None, state: LSTMState
    ) -> tuple[MDNOutput, LSTMState]:
        """One step for B envs: z (B, Z), action (B, A), restart (B,), state (h, c) each (B, H)."""
        h, c = torch.lstm_cell(self.inputs(z, action, restart), state, *self.lstm_weights())
        return self.heads(h), (h, c)

    def lstm_weights(self) -> tuple[nn.Parameter, nn.Parameter, nn.Parameter, nn.Parameter]:
        """The LSTM's (weight_ih, weight_hh, bias_ih, bias_hh) (``lstm.weight_ih_l0`` ... of its one layer)."""
        weight_ih, weight_hh, bias_ih, bias_hh = self.lstm.all_weights[0]
        return weight_ih, weight_hh, bias_ih, bias_hh

    def step_parameters(self) -> list[torch.Tensor]:
        """The parameters :meth:`step` uses (LSTM weights and biases, then every head's)."""
        heads = [m for m in (self.mdn, self.done, self.reward) if m is not None]
        return [*self.lstm_weights(), *(p for m in heads for p in (m.weight, m.bias))]

    def done_probability(self, done_logit: torch.Tensor) -> torch.Tensor:
        """Calibrated P(done): undoes the positive-class weight the done head was trained with."""
        return torch.sigmoid(done_logit - math.log(self.config.done_pos_weight))

    def loss(
        self,
        out: MDNOutput,
        next_z: torch.Tensor,
        z_mask: torch.Tensor,
        reward: torch.Tensor,
        done: torch.Tensor,
        step_mask: torch.Tensor,
        z_total: torch.Tensor | None = None,
        step_total: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, dict[str, float]]:
        """Masked MDN NLL (per latent dim) + weighted done BCE + reward MSE.

        next_z (B, T, Z) targets; z_mask (B, T) where the target exists; reward, done (B, T);
        step_mask (B, T) where the step is real. The sums are divided by the counts of targets and steps,
        by default this batch's; ``z_total`` and ``step_total`` replace them, e.g. by the counts of a global
        batch this one is a shard of (then loss and metrics are the shard's share of the global ones).
        """
        nll = mixture_nll(out, next_z)  # (B, T, Z)
        zmask = z_mask.to(nll.dtype)
        nll_loss = (nll.mean(-1) * zmask).sum() / (zmask.sum().clamp(min=1) if z_total is None else z_total)
        smask = step_mask.to(nll.dtype)
        n_steps = smask.sum().clamp(min=1) if step_total is None else step_total
        loss, metrics = nll_loss, {"nll": nll_loss.item()}
        if self.done is not None:
            pos_weight = torch.tensor(self.config.done_pos_weight, device=nll.device)
            bce = F.binary_cross_entropy_with_logits(
                out.done_logit, done.to(nll.dtype), pos_weight=pos_weight, reduction="none"
            )
            done_loss = (bce * smask).sum() / n_steps
            loss = loss + done_loss
            metrics["done_bce"] = done_loss.item()
        if self.reward is not None:
            reward_loss = ((out.reward - reward).pow(2) * smask).sum() / n_steps
            loss = loss + reward_loss
            metrics["reward_mse"] = reward_loss.item()
        metrics["loss"] = loss.item()
        return loss, metrics


class StepHeads(NamedTuple):
    """Heads of one :class:`FusedStep`: views into its output buffer, overwritten by the next step."""

    logits: torch.Tensor  # (B, Z, K) mixture logits, not normalised (see sample_from_logits)
    mu: torch.Tensor  # (B, Z, K)
    log_sigma: torch.Tensor  # (B, Z, K)
    reward: torch.Tensor  # (B,) (zeros without a reward head)
    done_logit: torch.Tensor  # (B,) (very negative without a done head)


class FusedStep:
    """:meth:`MDNRNN.step` for a fixed batch of B envs and their state, arranged for speed (the dream's hot loop).

    The state is one buffer ``xh`` (B, Z + H + 1 + A (+1)) laid out [z, h, 1, action(, restart)] plus ``c``
    (B, H); ``z``, ``h``, ``action`` and ``restart`` are views of it. The four gate pre-activations are then
    one matrix product ``xh @ W`` with W = [W_ih(z); W_hh; b_ih + b_hh; W_ih(action, restart)] (the constant
    1 column adds the biases), instead of two products, two bias copies and a sum, its columns ordered
    i, f, o, g so the three sigmoid gates are one block; the new h is written back into ``xh`` in place.
    All heads are one product ``[h, 1] @ W_heads`` whose columns are [logits (K, Z), mu (K, Z), log_sigma
    (K, Z), done, reward]: each (B, Z, K) view then reduces over K along a stride of Z, which vectorises
    (M's interleaved (Z, K, 3) columns are ~2.5x slower to sample from on CPU). Products go to
    preallocated buffers. The packed weights are rebuilt whenever M's step parameters change in place
    (``load_state_dict``, an optimizer step) or move (``.to()``).
    """

    def __init__(self, model: MDNRNN, batch: int) -> None:
        cfg = model.config
        self.model = model
        z, h, k = cfg.z_size, cfg.hidden_size, cfg.num_mixtures
        self._sizes = (z, h, k)
        weight = model.mdn.weight
        self.xh = weight.new_zeros(batch, cfg.input_size + h + 1)
        self.xh[:, z + h] = 1.0
        self.c = weight.new_zeros(batch, h)
        self._bind_views()
        self._gates = weight.new_empty(batch, 4 * h)
        self._heads = weight.new_empty(batch, 3 * k * z + 2)
        self._dropped: torch.Tensor | None = None  # [h * mask, 1] (B, H + 1), made on the first masked step
        self._zeros, self._never = weight.new_zeros(batch), weight.new_full((batch,), -30.0)
        self._params = model.step_parameters()
        self._key: list[tuple[int, int]] = []

    def _bind_views(self) -> None:
        """``z``, ``h``, ``action`` and ``restart``: views of ``xh``."""
        cfg, (z, h, _) = self.model.config, self._sizes
        self.z, self.h = self.xh[:, :z], self.xh[:, z : z + h]
        self.action = self.xh[:, z + h + 1 : z + h + 1 + cfg.action_dim]
        self.restart = self.xh[:, -1] if cfg.restart_flag else None

    def __getstate__(self) -> dict[str, Any]:
        """Pickles the buffers without the views (pickle would copy each view apart from ``xh``) or the packed
        weights (rebuilt on the next step); a copy continues bit-identically."""
        views = ("z", "h", "action", "restart", "_key", "_w_gates", "_w_heads")
        return {k: v for k, v in self.__dict__.items() if k not in views}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._key = []
        self._bind_views()

    def _pack(self) -> None:
        """(Re)builds the packed weights when a parameter of M's step changed since the last pack."""
        key = [(p.data_ptr(), p._version) for p in self._params]
        if key == self._key:
            return
        m, (z, h, k) = self.model, self._sizes
        with torch.no_grad():
            weight_ih, weight_hh, bias_ih, bias_hh = m.lstm_weights()
            w_ih = weight_ih.t()  # (input, 4H)
            bias = (bias_ih + bias_hh)[None]
            w = torch.cat([w_ih[:z], weight_hh.t(), bias, w_ih[z:]])  # columns: gates i, f, g, o
            self._w_gates = torch.cat([w[:, : 2 * h], w[:, 3 * h :], w[:, 2 * h : 3 * h]], dim=1).contiguous()
            # M's mixture columns are ordered (z, k, part); reorder to (part, k, z)
            w_mdn = m.mdn.weight.view(z, k, 3, h).permute(2, 1, 0, 3).reshape(-1, h)
            b_mdn = m.mdn.bias.view(z, k, 3).permute(2, 1, 0).reshape(-1)
            extra = [(head.weight, head.bias) if head is not None else (w_mdn.new_zeros(1, h), w_mdn.new_zeros(1))
                     for head in (m.done, m.reward)]  # fmt: skip
            weights = torch.cat([w_mdn, *(w for w, _ in extra)])  # (3KZ + 2, H)
            biases = torch.cat([b_mdn, *(b for _, b in extra)])
            self._w_heads = torch.cat([weights.t(), biases[None]]).contiguous()  # (H + 1, 3KZ + 2)
        self._key = key

    def take(self, index: torch.Tensor) -> FusedStep:
        """A FusedStep for the envs ``index`` (B',) int64 selects, their state (z, h, c, restart) copied.

        It shares this one's packed weights (and rebuilds its own, as usual, once M's parameters change).
        """
        cell = FusedStep(self.model, len(index))
        cell.xh.copy_(self.xh.index_select(0, index))
        cell.c.copy_(self.c.index_select(0, index))
        if self._key:  # packed already: packing M again would cost several steps of a small batch
            cell._w_gates, cell._w_heads, cell._key = self._w_gates, self._w_heads, self._key
        return cell

    def __call__(self, head_mask: torch.Tensor | None = None) -> StepHeads:
        """One step from [z, h, action(, restart)]: updates h (in ``xh``) and ``c`` in place; returns the heads.

        ``head_mask`` (B, H): the heads read h * head_mask (a dropout mask, already scaled by 1 / (1 - p));
        the state keeps the unmasked h.
        """
        self._pack()
        z, h, k = self._sizes
        gates = torch.mm(self.xh, self._w_gates, out=self._gates)  # (B, 4H): i, f, o, g
        gates[:, : 3 * h].sigmoid_()
        cell = gates[:, 3 * h :].tanh_()
        self.c.mul_(gates[:, h : 2 * h]).addcmul_(gates[:, :h], cell)  # c = f * c + i * g
        torch.tanh(self.c, out=self.h).mul_(gates[:, 2 * h : 3 * h])  # h = o * tanh(c)
        features = self.xh[:, z : z + h + 1]  # [h, 1]
        if head_mask is not None:
            if self._dropped is None:
                self._dropped = features.clone()
            torch.mul(self.h, head_mask, out=self._dropped[:, :h])
            features = self._dropped
        out = torch.mm(features, self._w_heads, out=self._heads)
        logits, mu, log_sigma = out[:, : 3 * k * z].unflatten(1, (3, k, z)).transpose(2, 3).unbind(1)
        reward = out[:, -1] if self.model.reward is not None else self._zeros
        done = out[:, -2] if self.model.done is not None else self._never
        return StepHeads(logits, mu, log_sigma, reward, done)


def mixture_nll(out: MDNOutput, target: torch.Tensor) -> torch.Tensor:
    """Negative log-likelihood of target (..., Z) under the per-dimension mixtures -> (..., Z)."""
    x = target.unsqueeze(-1)
    log_prob = -0.5 * ((x - out.mu) * torch.exp(-out.log_sigma)).pow(2) - out.log_sigma - LOG_SQRT_2PI
    return -torch.logsumexp(out.log_pi + log_prob, dim=-1)


def sample_mixture(
    out: MDNOutput, temperature: torch.Tensor, uniform: torch.Tensor, noise: torch.Tensor
) -> torch.Tensor:
    """z (B, Z) from M's per-dimension mixtures (B, Z, K) at temperatures (B,), given the randomness.

    The component is picked by inverse CDF of softmax(log_pi / tau) with ``uniform`` (B, Z) in (0, 1);
    z = mu + sigma * sqrt(tau) * ``noise`` (B, Z) standard normals.
    """
    return sample_from_logits(out.log_pi, out.mu, out.log_sigma, temperature, uniform, noise)


def sample_from_logits(
    logits: torch.Tensor,
    mu: torch.Tensor,
    log_sigma: torch.Tensor,
    temperature: torch.Tensor,
    uniform: torch.Tensor,
    noise: torch.Tensor,
) -> torch.Tensor:
    """:func:`sample_mixture` on (B, Z, K) tensors; ``logits`` may be off by a constant per (B, Z) (softmax ignores it).

    Any strides work; reducing over K is fastest when K is not the innermost dimension (see :class:`FusedStep`).
    """
    scaled = logits / temperature.view(-1, 1, 1)  # (B, Z, K)
    # Unnormalised CDF of softmax(scaled) (torch's softmax over a last dim of 5 is ~10x slower on CPU).
    cdf = scaled.sub_(scaled.amax(dim=-1, keepdim=True)).exp_().cumsum_(dim=-1)
    target = uniform.unsqueeze(-1) * cdf[..., -1:]  # (B, Z, 1)
    # (target - cdf > 0) == (target > cdf); summing floats avoids a slow bool -> int64 copy
    k = (target - cdf).gt_(0).sum(dim=-1, keepdim=True).to(torch.int64).clamp_(max=cdf.shape[-1] - 1)
    chosen_mu = mu.gather(-1, k).squeeze(-1)
    sigma = log_sigma.gather(-1, k).squeeze(-1).exp_()
    return torch.addcmul(chosen_mu, sigma, noise * temperature.sqrt().unsqueeze(-1))
