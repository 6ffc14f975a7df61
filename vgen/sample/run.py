"""vgen-sample's run: the prompts encoded first and the text encoders freed; then the family's
weights (a checkpoint's EMA or model weights, a LoRA run's adapters over model.pretrained,
model.pretrained, else the seeded initialisation), parallelized as parallel asks (Ulysses SP,
ZeRO-3 gathers); then per batch: sample, decode, write. Under msrun the prompts are split over
the data-parallel groups; the first rank of each SP group writes its videos."""
import logging
from pathlib import Path
from typing import List, Optional

from omegaconf import OmegaConf

from ..config.validate import ConfigError
from ..parallel.mesh import Mesh

log = logging.getLogger("vgen")


def read_prompts(sample_cfg) -> List[str]:
    prompts = list(sample_cfg.prompts)
    if sample_cfg.prompt_file:
        path = Path(sample_cfg.prompt_file)
        if not path.is_file():
            raise ConfigError(f"sample.prompt_file={path}: no such file (one prompt per line)")
        prompts += [line.strip() for line in path.read_text().splitlines()
                    if line.strip() and not line.lstrip().startswith("#")]
    if not prompts:
        raise ConfigError("no prompts: set sample.prompts='[\"a cat\", \"a dog\"]' or sample.prompt_file=<file>")
    return prompts


def find_checkpoint(path: str):
    """(checkpoint directory, its run directory or None) of a run directory or a checkpoint."""
    from ..train import checkpoint as ckpt_io

    p = Path(path)
    ckpt = ckpt_io.checkpoint_of(p)
    if ckpt is None:
        raise ConfigError(f"sample.checkpoint={path}: neither a checkpoint directory (with {ckpt_io.STATE_FILE}) "
                          "nor a run directory with complete checkpoints under checkpoints/")
    if ckpt == p:
        return p, (p.parent.parent if p.parent.name == "checkpoints" else None)
    return ckpt, p


def with_run_model(cfg, run: Optional[Path]):
    """The model group the checkpoint was trained with (its run's config.yaml), when it has one."""
    if run is None or not (run / "config.yaml").is_file():
        return cfg
    trained = OmegaConf.load(run / "config.yaml")
    cfg = cfg.copy()
    cfg.model = trained.model  # replaced whole: no key of another family's group stays
    log.info("model group from %s", run / "config.yaml")
    return cfg


def load_weights(cfg, family, mesh: Mesh, ckpt: Optional[Path], device: str) -> None:
    """The declared family's weights in place, parallelized and in the compute dtype."""
    from ..models.layers.init import named_params
    from ..models.lora import adapt_family, adapter_names
    from ..models.weights import check_layout, fill_parameters, layout_problems, open_pretrained
    from ..parallel.plan import parallelize, sharded_names
    from ..train.checkpoint import CheckpointReader, open_adapters
    from ..train.precision import cast_model, resolve_precision

    policy = resolve_precision(cfg.precision.dtype, device, cfg.model.dtype_exempt)
    lora = cfg.model.lora
    if lora.rank > 0:
        adapt_family(family, lora, cfg.seed, dropout=0.0)
    shapes = {n: tuple(q.shape) for n, q in named_params(family.net)}
    sources, what = [], []
    if ckpt is not None:
        reader = CheckpointReader(ckpt)
        kind = "ema" if cfg.sample.ema and reader.has("ema") else "model"
        weights = reader.weights(kind)
        base = set(adapter_names(family.net)) if lora.rank > 0 else set(shapes)
        check_layout(str(ckpt), *layout_problems({n: shapes[n] for n in base}, weights.shapes), strict=lora.rank == 0)
        sources.append(weights)
        what.append(f"{ckpt} ({kind})")
    if cfg.model.pretrained:
        sources.append(open_pretrained(cfg.model.pretrained, family.net, family.init_only,
                                       adapter_names(family.net), strict=ckpt is None))
        what.append(cfg.model.pretrained)
    if lora.rank > 0 and lora.pretrained and ckpt is None:
        sources.append(open_adapters(lora.pretrained, {n: shapes[n] for n in adapter_names(family.net)}))
        what.append(lora.pretrained)
    if mesh.is_main:
        log.info("weights: %s", " over ".join(what) if what else f"none given: the seeded initialisation (seed {cfg.seed})")
    sharded = sharded_names(family, mesh, cfg.parallel)
    fill_parameters(family.net, cfg.seed, sources, sharded, mesh.size, mesh.rank)
    parallelize(family, mesh, cfg.parallel, shapes, sharded)
    cast_model(family.net, policy)
    family.net.set_train(False)


def out_folder(cfg, ckpt: Optional[Path], run: Optional[Path]) -> Path:
    if cfg.sample.out_dir:
        return Path(cfg.sample.out_dir)
    if ckpt is not None:
        return (run or ckpt) / "samples" / ckpt.name
    return Path(cfg.run_dir) / "samples"


def sample(cfg, mesh: Optional[Mesh] = None) -> List[Path]:
    """Writes one video (and its json) per prompt; returns the paths this rank wrote."""
    from ..models.encoders import build_vae
    from ..models.registry import build_family
    from ..runtime import setup_device
    from .conditioning import encoded_batches
    from .output import video_name, write_sample
    from .sampler import Decoder, Sampler

    device = setup_device(cfg.device)  # before any kernel runs
    mesh = mesh or Mesh()
    s = cfg.sample
    prompts = read_prompts(s)
    ckpt, run = find_checkpoint(s.checkpoint) if s.checkpoint else (None, None)
    cfg = with_run_model(cfg, run)
    family = build_family(cfg.model)  # declared: the weights come after the prompts are encoded
    sampler = Sampler(family, cfg.model, s, jit=cfg.jit)
    # this data-parallel group's prompts, padded (with -1: drawn, not written) so that every rank
    # makes the same number of calls (ZeRO-3 gathers span all ranks)
    mine = [i for i in range(len(prompts)) if i % mesh.dp == mesh.dp_rank]
    mine += [-1] * (-(-len(prompts) // mesh.dp) - len(mine))
    batches = encoded_batches(family, cfg.model, cfg.seed, prompts, mine, sampler.geometry, s, cfg.jit)
    load_weights(cfg, family, mesh, ckpt, device)
    decoder = Decoder(build_vae(cfg.model.vae, cfg.seed), family.latent, cfg.model.vae.frames_per_call,
                      cfg.jit) if s.decode else None
    folder, writes = out_folder(cfg, ckpt, run), mesh.sp_rank == 0
    settings = {**sampler.settings(), "model": cfg.model.name, "checkpoint": str(ckpt) if ckpt else None,
                "pretrained": cfg.model.pretrained, "fps": s.fps}
    if family.text.drop_to == "empty":  # the unconditional text it encoded
        settings["negative_prompt"] = s.negative_prompt
    if "guidance" in family.fields and batches:  # the embedded guidance fed (sample.guidance or the family's)
        settings["guidance"] = float(batches[0][1]["guidance"][0])
    written = []
    for index, cond, uncond in batches:
        seeds = [s.seed + i for i in index]
        latents = sampler.latents(cond, uncond, seeds)
        frames = decoder(latents) if decoder is not None else None
        if not writes:
            continue
        for j, i in enumerate(index):
            if i < 0:
                continue
            meta = {**settings, "prompt": prompts[i], "index": i, "seed": seeds[j]}
            written.append(write_sample(folder, video_name(i, prompts[i], seeds[j]), meta,
                                        None if frames is None else frames[j], s.fps, latents[j]))
            log.info("wrote %s", written[-1])
    return written
