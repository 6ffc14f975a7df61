"""Diffusion-DPO (Wallace et al., 2023) on a flow-matching path: preference pairs (a prompt, a chosen
and a rejected clip) train the model to lower its error on the chosen clip, relative to a frozen
reference, more than on the rejected one.

Both clips of a pair share the noise and the noise level s (one draw per pair, as the official
Diffusion-DPO repeats them over the pair); e = per-sample MSE of the predicted velocity (the
family's flow convention, rectified_flow.py), for the model (e) and the reference (r):

    z    = -beta / 2 * ((e_w - e_l) - (r_w - r_l))
    loss = -log sigmoid(z) = softplus(-z)

the official form (its `inside_term` with scale -0.5 beta on MSEs averaged over the latent) with the
velocity error in place of the noise error. At the start the model is its reference and every
loss is log 2. The reference's errors arrive with the batch (`ref_error` [B, 2]: chosen, rejected),
computed by a forward-only pass of the frozen reference (vgen/train/reference.py): the base with
its LoRA adapters off, or a frozen copy. beta is ours: Diffusion-DPO used 5000 (SD 1.5) and 2500
(SDXL); neither Step-Video's Video-DPO beta nor its other settings are published."""
from mindspore import ops

from .denoise import plain_denoise
from .rectified_flow import RectifiedFlow, RectifiedFlowLoss


def neg_log_sigmoid(z):
    """-log sigmoid(z) = softplus(-z), without overflow for large |z|. The softplus kernel, not
    relu(-z) + log(1 + exp(-|z|)): that form's gradient is 0 at z = 0 (relu' and abs' are 0 there),
    which is every pair at the first step, where the model is its reference."""
    return ops.softplus(-z)


class PairErrors(RectifiedFlowLoss):
    """[B, 2]: the velocity errors on the chosen (`latent`) and the rejected (`latent_rejected`)
    clip of each pair, at the same noise and level."""

    def pair(self, batch):
        noise, s = batch["noise"], batch["t"]
        return ops.stack([self.error(batch["latent"], noise, s, batch),
                          self.error(batch["latent_rejected"], noise, s, batch)], 1)

    def construct(self, batch):
        return self.pair(batch)


class FlowDPOLoss(PairErrors):
    """Per-pair DPO loss [B] against the batch's `ref_error` [B, 2]."""

    def __init__(self, net, denoise=plain_denoise, data_at_one: bool = False, timestep_scale: float = 1000.0,
                 beta: float = 5000.0):
        super().__init__(net, denoise, data_at_one, timestep_scale)
        self.beta = float(beta)

    def construct(self, batch):
        e, r = self.pair(batch), batch["ref_error"]
        z = (-0.5 * self.beta) * ((e[:, 0] - e[:, 1]) - (r[:, 0] - r[:, 1]))
        return neg_log_sigmoid(z)


class FlowDPO:
    """The preference objective over a family's rectified flow: the same draws (one noise and level
    per pair), the DPO loss cell, and the reference's pair-error cell."""

    fields = ("latent", "latent_rejected", "noise", "t")

    def __init__(self, flow: RectifiedFlow, beta: float):
        if not isinstance(flow, RectifiedFlow):
            raise ValueError(f"dpo: preference training needs a flow-matching family; this one trains with "
                             f"{type(flow).__name__}")
        if beta <= 0:
            raise ValueError(f"dpo.beta={beta}: must be > 0")
        self.flow, self.beta = flow, float(beta)
        self.base = flow  # the objective that samples

    def draw(self, rngs, latent_shape, step: int = 0):
        return self.flow.draw(rngs, latent_shape, step)

    def loss_cell(self, net, denoise=plain_denoise, frame_masked: bool = False):
        return FlowDPOLoss(net, denoise, self.flow.data_at_one, self.flow.timestep_scale, self.beta)

    def pair_errors(self, net, denoise=plain_denoise):
        return PairErrors(net, denoise, self.flow.data_at_one, self.flow.timestep_scale)

    def sample(self, velocity, noise, steps: int = None):
        return self.flow.sample(velocity, noise, steps)
