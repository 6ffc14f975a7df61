"""Typed schemas of the config groups the trainer reads.

Every group is a dataclass registered in Hydra's ConfigStore; the YAML files in ``conf/`` start
from these schemas, so an unknown key or a wrongly typed value fails while Hydra composes, naming
the key. Checks that need more than one field (impossible combinations) live in ``validate.py``.
This module must not import MindSpore: configs are checked before any heavy import.
"""
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Dict, List, Optional

from omegaconf import MISSING


class Device(Enum):
    auto = "auto"
    CPU = "CPU"
    Ascend = "Ascend"
    GPU = "GPU"


class DType(Enum):
    auto = "auto"  # bf16 on Ascend/GPU, fp32 on CPU
    fp32 = "fp32"
    bf16 = "bf16"
    fp16 = "fp16"


class LRSchedule(Enum):
    constant = "constant"
    cosine = "cosine"


@dataclass
class ScheduleConfig:
    max_steps: int = 1000
    epochs: Optional[int] = None  # train this many passes over the data instead: max_steps follows from it
    lr: float = 1e-4
    min_lr: float = 0.0  # floor of the cosine schedule
    warmup_steps: int = 0
    lr_schedule: LRSchedule = LRSchedule.constant
    decay_steps: Optional[int] = None  # cosine horizon; defaults to max_steps
    batch_size: int = 1  # micro-batch per data-parallel rank
    grad_accum: int = 1
    weight_decay: float = 0.0
    beta1: float = 0.9
    beta2: float = 0.999
    eps: float = 1e-8
    grad_clip: float = 1.0  # max global grad norm; 0 disables clipping
    ema_decay: float = 0.0  # 0 disables the EMA copy
    log_every: int = 10
    ckpt_every: int = 500
    keep_last: int = 3
    # validation every n steps (0: none): videos of the `sample` prompts and seeds, and the loss on the
    # data.holdout samples at these noise levels (0 data, 1 noise; IDDPM: timestep level x (T - 1))
    val_every: int = 0
    val_levels: List[float] = field(default_factory=lambda: [0.1, 0.3, 0.5, 0.7, 0.9])


@dataclass
class PrecisionConfig:
    dtype: DType = DType.auto
    # fp16 only: initial loss scale; dynamic scaling halves it on overflow and doubles it after
    # `loss_scale_window` clean steps. bf16 and fp32 never scale.
    loss_scale: float = 65536.0
    dynamic_loss_scale: bool = True
    loss_scale_window: int = 1000
    loss_scale_factor: float = 2.0
    min_loss_scale: float = 1.0


@dataclass
class ParallelConfig:
    workers: int = 1  # total worker processes (world size) across all nodes
    sp: int = 1  # Ulysses sequence-parallel degree; dp = workers // sp
    zero_stage: int = 0  # 0 (plain DP), 1 (optimizer), 2 (+grads), 3 (+params)
    # none | all | first:<N> | every:<n>  (blocks of the family to recompute in backward; for a family
    # with several kinds of blocks, within each kind)
    recompute: str = "none"
    recompute_kinds: Dict[str, str] = field(default_factory=dict)  # per kind, e.g. {double: all, single: first:20}
    recompute_attention: bool = True  # False keeps the attention core out of recompute
    nodes: int = 1
    node_rank: int = 0
    master_addr: str = "127.0.0.1"
    master_port: int = 0  # 0: pick a free port


@dataclass
class DataConfig:
    kind: str = MISSING
    skip_bad: bool = False  # skip and count unreadable samples instead of failing
    text_dropout: Optional[float] = None  # caption dropout; None: the family's default
    prefetch: int = 2  # batches prepared ahead of the trainer by a background thread
    holdout: int = 0  # the data set's last n samples are never trained on: the validation loss scores them


@dataclass
class SyntheticDataConfig(DataConfig):
    kind: str = "synthetic"
    num_samples: int = 256
    latent_size: Optional[List[int]] = None  # (T, H, W) of the latent; default: the model's
    text_len: Optional[int] = None  # tokens per caption; default: the model's text length
    min_text_len: int = 4  # valid tokens are drawn in [min_text_len, text_len]


@dataclass
class CachedDataConfig(DataConfig):
    kind: str = "cached"
    csv_path: str = MISSING  # CSV listing the samples (`video,caption`)
    text_emb_dir: str = MISSING  # <dir>/<video stem>.npz with text_emb, mask
    latent_dir: str = MISSING  # <dir>/<video stem>.npz with latent_mean, latent_std, fps, ori_size
    video_column: str = "video"
    caption_column: str = "caption"
    num_frames: Optional[int] = None  # latent frames per sample; default: the model's
    frame_stride: int = 1  # stride between sampled latent frames
    shuffle: bool = True


@dataclass
class VideoDataConfig(DataConfig):
    """Videos (and images) listed by a CSV, bucketed by resolution and length; latents and text
    embeddings from caches made by vgen-cache, or encoded online by the frozen VAE / text encoder."""

    kind: str = "video"
    csv_path: str = MISSING
    root: Optional[str] = None  # video paths are relative to it (default: the CSV's directory)
    schema: str = "generic"  # generic: video,caption[,num_frames,height,width,fps] | webvid
    video_column: Optional[str] = None
    caption_column: Optional[str] = None
    buckets: Optional[str] = None  # a bucket table (conf/buckets/<name>.yaml or a YAML path); None: fixed size
    num_frames: int = 16  # pixel frames per clip without buckets
    resolution: List[int] = field(default_factory=lambda: [256, 256])  # (h, w) without buckets
    frame_stride: int = 3  # stride between sampled frames (Open-Sora's frame_interval)
    target_fps: Optional[float] = None  # sample at this fps instead of a fixed stride
    cache_dir: Optional[str] = None  # <cache_dir>/text/ and <cache_dir>/latent_<h>x<w>/ from vgen-cache
    latents: str = "online"  # online (frozen VAE inside the step) | cache
    text: str = "online"  # online (frozen text encoder) | cache
    probe_cache: Optional[str] = None  # JSON file caching probed video metadata
    shuffle: bool = True


@dataclass
class DPOConfig:
    """A preference stage (objectives/dpo.py): the CSV's rows are (caption, chosen video, rejected
    video), the chosen clip in data.video_column, the rejected one in `rejected_column`."""

    enabled: bool = False
    beta: float = 5000.0  # ours (Diffusion-DPO's SD 1.5 value); Step-Video's is not published
    # auto: adapters_off with LoRA (the base with its adapters skipped, no extra memory), else
    # frozen_copy (a second, frozen model from model.pretrained; ZeRO-3 shards it like the model)
    reference: str = "auto"
    rejected_column: str = "rejected"


@dataclass
class RewardConfig:
    """One reward term of a distillation stage (objectives/rewards.py); off while `model` is empty."""

    # image: hpsv2.1 | hpsv2.1-tiny; video: internvideo2-s2 | internvideo2-s2-tiny (tiny: tests, CPU runs, seeded)
    model: str = ""
    path: Optional[str] = None  # its weights, converted to safetensors (tools/convert_weights.py)
    tokenizer: Optional[str] = None  # its tokenizer files; default: model.text_encoder.tokenizer
    scale: float = 1.0  # the term is -scale * mean reward
    frames: int = 5  # frames scored per sample
    samples: int = 1  # image reward: samples of the micro-batch scored (the video reward scores all)
    ranks: List[int] = field(default_factory=list)  # the ranks that compute it (official: image 0-5, video 6-7); []: all


@dataclass
class DistillConfig:
    """Consistency distillation (objectives/consistency.py, T2V-Turbo): the model trained is the
    student, the guidance scale embedded (a model with time_cond_proj_dim); the teacher is its base
    with the LoRA adapters off (or, without LoRA, a frozen copy of model.pretrained)."""

    enabled: bool = False
    solver_steps: int = 50  # DDIM solver steps over the training timesteps
    skip: Optional[int] = None  # the end timestep is s - skip; default: diffusion steps // solver_steps (20)
    w_min: float = 5.0  # the guidance scale w ~ U[w_min, w_max], embedded by the student
    w_max: float = 15.0
    huber_c: float = 0.001  # pseudo-Huber loss constant
    timestep_scaling: float = 10.0  # of the boundary scalings c_skip / c_out
    # online: the student's own weights under no gradient (train_t2v_turbo_v1_lora.py);
    # ema: their EMA at schedule.ema_decay (LCM's target network, decay 0.95)
    target: str = "online"
    ranks: List[int] = field(default_factory=list)  # the ranks whose loss has the consistency term; []: all
    image_reward: RewardConfig = field(default_factory=RewardConfig)  # T2V-Turbo: HPSv2.1, x1.0, 5 frames of 1 sample
    # T2V-Turbo: InternVideo2-S2 (internvideo2-s2, its tokenizer bert-large-uncased's vocab.txt), x2.0, 8 frames
    video_reward: RewardConfig = field(default_factory=lambda: RewardConfig(scale=2.0, frames=8))


@dataclass
class SampleConfig:
    """vgen-sample, and validation videos during training (schedule.val_every). Unset values come
    from the model group (its objective's sampling_steps, cfg_scale, sample_shift; its input_size)."""

    prompts: List[str] = field(default_factory=list)  # the prompts (or prompt_file)
    prompt_file: Optional[str] = None  # one prompt per line (blank lines and '#' lines skipped)
    negative_prompt: str = ""  # the unconditional text of families that encode one (Step-Video, HunyuanVideo)
    seed: int = 0  # video i starts from the noise of seed + i, whatever the batch
    steps: Optional[int] = None  # sampler steps; default: model.objective.sampling_steps
    cfg_scale: Optional[float] = None  # classifier-free guidance; default: model.objective.cfg_scale; 1: off
    shift: Optional[float] = None  # flow families: the schedule's shift; default: model.objective.sample_shift
    guidance: Optional[float] = None  # embedded guidance (HunyuanVideo guidance_embed); default: model.train_guidance
    method: str = "default"  # IDDPM families: iddpm (ancestral) | ddim | lcm (a consistency student); default: the model's
    num_frames: Optional[int] = None  # pixel frames; default: those of model.input_size's latent frames
    resolution: Optional[List[int]] = None  # (h, w) pixels; default: model.input_size's latent size in pixels
    fps: float = 24.0  # of the written videos (and the fps conditioning of families that take one)
    batch_size: int = 1  # videos per denoiser call (twice that with CFG)
    checkpoint: Optional[str] = None  # a run directory (its latest checkpoint) or a checkpoint directory
    ema: bool = True  # the checkpoint's EMA weights when it has them
    out_dir: Optional[str] = None  # default: <run_dir>/samples (or the checkpoint's run)/step_<n>
    decode: bool = True  # False: write the latents (npz) instead of decoding them with the VAE
    teacache: float = 0.0  # TeaCache threshold (HunyuanVideo; published 0.1 and 0.15); 0: every step runs the blocks


@dataclass
class TrainConfig:
    model: Any = MISSING
    data: Any = MISSING
    parallel: ParallelConfig = field(default_factory=ParallelConfig)
    precision: PrecisionConfig = field(default_factory=PrecisionConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    dpo: DPOConfig = field(default_factory=DPOConfig)
    distill: DistillConfig = field(default_factory=DistillConfig)
    sample: SampleConfig = field(default_factory=SampleConfig)
    seed: int = 42
    run_dir: Optional[str] = None  # default: <runs_root>/<experiment or model-data>/<overrides>
    runs_root: str = "runs"
    resume: str = "auto"  # auto | none | <path of a checkpoint directory>
    device: Device = Device.auto
    jit: bool = True  # compile the train step with ms.jit; False runs PyNative
    progress: bool = True  # tqdm progress bar on rank 0
    experiment: Optional[str] = None  # set by experiment recipes; names the run directory
