"""ModelScope text-to-video-ms-1.7b (T2V-Turbo's MS teacher; with cond_proj its student) as a
declared family: schema, checks, blocks, LoRA targets, its frozen text encoder (Stable Diffusion 2's
CLIP text model: OpenCLIP ViT-H/14's text tower in transformers' names, 23 layers, 77 tokens) and
VAE (the SD AutoencoderKL, frame by frame, latents x 0.18215), and the diffusers folder's converters."""
from ...config.validate import check_unet
from ..adapters import CLIP_TEXT, HPS, IV2, SD_VAE, from_schema
from ..family import STATES, FamilySpec, TextEncoderSpec, WeightsAdapter, lazy
from ..opensora.spec import VAES as SD_VAES
from .config import MSConfig

CLIP_TOKENIZER = ("vgen.models.text.clip:CLIPTokenizer", ("tokenizer.json",))
TEXT_ENCODERS = {
    "clip-vit-h-14-sd2": TextEncoderSpec(lazy("vgen.models.text.clip:build_states_encoder", "clip-vit-h-14-sd2"), 1024,
                                         *CLIP_TOKENIZER, STATES, max_positions=77),
    "clip-sd2-tiny": TextEncoderSpec(lazy("vgen.models.text.clip:build_states_encoder", "tiny", hidden_size=32,
                                          hidden_act="gelu"), 32, *CLIP_TOKENIZER, STATES, max_positions=16),
}
# every Linear, Conv2d and Conv3d, as T2V-Turbo adapts the UNet (its unet_lora.pt: 575 layers)
LORA_TARGETS = ("*",)


def check(m, cfg, err):
    levels = {f"block_out_channels[{i}]": ch for i, ch in enumerate(m.block_out_channels)}
    check_unet(m, err, levels, "norm_num_groups", "attention_head_dim", len(m.block_out_channels) - 1)


FAMILY = FamilySpec(
    name="modelscope", schema=MSConfig, schema_name="ms_schema",
    build="vgen.models.modelscope.family:build", check=check,
    # the UNet's blocks (units of recompute and ZeRO-3): the down blocks, the mid block's layers, the up blocks
    blocks={"block": ("down_blocks", "mid_block.resnets", "mid_block.temp_convs", "mid_block.attentions",
                      "mid_block.temp_attentions", "up_blocks")},
    sp=None, sp_missing="the ModelScope UNet has no sequence-parallel plan (its convolutions see whole frames)",
    lora_targets=LORA_TARGETS,
    text_encoders=TEXT_ENCODERS, vaes=SD_VAES,
    # the diffusers folder: unet/diffusion_pytorch_model.safetensors (bare names), text_encoder/
    # (clip_text, preset clip-vit-h-14-sd2), vae/ (sd_vae)
    weights=(WeightsAdapter("modelscope", *from_schema(MSConfig, "ms_schema", "vgen.models.modelscope.family:build",
                                                       "ms"),
                            about="text-to-video-ms-1.7b unet/diffusion_pytorch_model.safetensors (bare diffusers "
                                  "names; T2V-Turbo's student with preset ms_turbo)"),
             CLIP_TEXT, SD_VAE, HPS, IV2),
)
