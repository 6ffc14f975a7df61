"""ModelScope text-to-video built as a family (declared in spec.py): the UNet3D trained with latent
diffusion's eps-prediction (objectives/iddpm.py with learn_sigma off), fed the 77 CLIP states (all
attended: the official pipeline passes no mask) and, for T2V-Turbo's student, the guidance scale."""
import numpy as np

from ...objectives.iddpm import IDDPM
from ..encoders import vae_spec
from ..family import Family, LatentSpec, TextSpec
from ..layers.init import declare_only
from .spec import FAMILY
from .unet3d import MSUNet3D


def denoise(net, x_t, t, b):
    return net(x_t, t, b["text_emb"])


def denoise_guided(net, x_t, t, b):
    return net(x_t, t, b["text_emb"], b["guidance"])


def guidance_field(guidance: float):
    """The student's embedded guidance scale (sample.guidance when sampling), unless the batch drew
    one (distillation)."""
    def prepare(batch):
        if "guidance" in batch:
            return {}
        return {"guidance": np.full(batch["text_emb"].shape[0], guidance, np.float32)}

    return prepare


def build(cfg) -> Family:
    n = len(cfg.block_out_channels)
    with declare_only():
        net = MSUNet3D(in_channels=cfg.in_channels, out_channels=cfg.in_channels,
                       block_out_channels=tuple(cfg.block_out_channels), layers_per_block=cfg.layers_per_block,
                       down_block_types=("CrossAttnDownBlock3D",) * (n - 1) + ("DownBlock3D",),
                       up_block_types=("UpBlock3D",) + ("CrossAttnUpBlock3D",) * (n - 1),
                       cross_attention_dim=cfg.cross_attention_dim, attention_head_dim=cfg.attention_head_dim,
                       transformer_in_heads=cfg.transformer_in_heads, norm_num_groups=cfg.norm_num_groups,
                       time_cond_proj_dim=cfg.time_cond_proj_dim)
    vae, o, guided = vae_spec(cfg.vae.name), cfg.objective, bool(cfg.time_cond_proj_dim)
    return Family(name=cfg.name, net=net,
                  objective=IDDPM(o.diffusion_steps, o.noise_schedule, o.learn_sigma, o.sampling_steps, o.cfg_scale,
                                  o.ddim_timesteps),
                  text=TextSpec(cfg.text_encoder.name, cfg.cross_attention_dim, cfg.text_len, cfg.text_dropout,
                                drop_to="empty"),
                  latent=LatentSpec(cfg.vae.name, cfg.in_channels, tuple(cfg.input_size), vae.compression, vae.scale,
                                    vae.shift),
                  spec=FAMILY, denoise=denoise_guided if guided else denoise,
                  unguided_denoise=denoise if guided else None,
                  fields=("text_emb", "guidance") if guided else ("text_emb",),
                  prepare=guidance_field(cfg.train_guidance) if guided else None)
