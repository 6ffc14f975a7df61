"""VideoCrafter2 built as a family (declared in spec.py): the UNet trained with latent diffusion's
eps-prediction (objectives/iddpm.py with learn_sigma off), and how a batch's named fields reach it:
the 77 OpenCLIP states (all attended, as the official cross-attention takes no mask), the fps and,
for T2V-Turbo's student, the guidance embedding."""
import numpy as np

from ...objectives.iddpm import IDDPM
from ..encoders import vae_spec
from ..family import Family, LatentSpec, TextSpec
from ..layers.init import declare_only
from .spec import FAMILY
from .unet import VC2UNet

FIELDS = ("text_emb", "fps")


def denoise(net, x_t, t, b):
    return net(x_t, t, b["text_emb"], b["fps"])


def denoise_guided(net, x_t, t, b):
    return net(x_t, t, b["text_emb"], b["fps"], b["guidance"])


def prepare_fields(guidance: float = None):
    """The clip's fps (lvdm's default 16 when the data has none) and, for the student, the guidance
    scale it embeds (sample.guidance when sampling) unless the batch drew one (distillation)."""
    def prepare(batch):
        b = batch["text_emb"].shape[0]
        out = {"fps": np.asarray(batch.get("fps", np.full(b, 16.0)), np.float32)}
        if guidance is not None and "guidance" not in batch:
            out["guidance"] = np.full(b, guidance, np.float32)
        return out

    return prepare


def build(cfg) -> Family:
    with declare_only():
        net = VC2UNet(in_channels=cfg.in_channels, out_channels=cfg.in_channels, model_channels=cfg.model_channels,
                      channel_mult=tuple(cfg.channel_mult), num_res_blocks=cfg.num_res_blocks,
                      attention_resolutions=tuple(cfg.attention_resolutions), head_channels=cfg.head_channels,
                      context_dim=cfg.context_dim, init_attn_heads=cfg.init_attn_heads,
                      time_cond_proj_dim=cfg.time_cond_proj_dim, norm_groups=cfg.norm_groups)
    vae = vae_spec(cfg.vae.name)
    o, guided = cfg.objective, bool(cfg.time_cond_proj_dim)
    return Family(name=cfg.name, net=net,
                  objective=IDDPM(o.diffusion_steps, o.noise_schedule, o.learn_sigma, o.sampling_steps, o.cfg_scale,
                                  o.ddim_timesteps),
                  text=TextSpec(cfg.text_encoder.name, cfg.context_dim, cfg.text_len, cfg.text_dropout, drop_to="empty"),
                  latent=LatentSpec(cfg.vae.name, cfg.in_channels, tuple(cfg.input_size), vae.compression, vae.scale,
                                    vae.shift),
                  spec=FAMILY, denoise=denoise_guided if guided else denoise,
                  unguided_denoise=denoise if guided else None,
                  fields=FIELDS + (("guidance",) if guided else ()),
                  prepare=prepare_fields(cfg.train_guidance if guided else None))
