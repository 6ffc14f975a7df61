"""vgen-cache: precompute the text embeddings and VAE latents that training reads with
data.text=cache / data.latents=cache.

    vgen-cache text model=opensora_stdit2 data=webvid data.csv_path=webvid/train.csv data.root=webvid/videos \\
        data.cache_dir=/data/webvid_cache model.text_encoder.path=t5.safetensors model.text_encoder.tokenizer=t5/
    vgen-cache vae model=opensora_stdit2 data=webvid data.csv_path=webvid/train.csv data.root=webvid/videos \\
        data.buckets=opensora_v1_1 data.cache_dir=/data/webvid_cache model.vae.path=sd_vae.safetensors

The overrides are vgen-train's (the same conf tree), so the caches are made by the encoders, at
the buckets or resolution and with the frame stride that training checks them against. Options
of the tool itself, given like overrides:
    cache.dtype=fp32|fp16     dtype of the stored arrays (default fp32)
    cache.batch_size=N        captions per text-encoder call (default 16)
    cache.chunk_frames=N      frames decoded and encoded at a time by a per-frame VAE (default 64)

Layout under data.cache_dir (see vgen/data/manifest.py): text/<video stem>.npz, text/empty.npz,
latent_<h>x<w>/<video stem>.npz, and a manifest.json per folder. Text: the states and mask of
model.text_encoder, plus the pooled vector of model.text_encoder_2 for a model that has one
(HunyuanVideo: LLM states through the prompt template, video or image by the row's file, and
CLIP's pooled output). With data.buckets a video is encoded at every bucket resolution it can be
assigned to, else at data.resolution; latents cover the clip taken at data.frame_stride (or
data.target_fps): every frame for a per-frame VAE, consecutive segments as long as the longest
training clip (data.num_frames, or the bucket table's most frames), each encoded on its own, for
a causal VAE (HunyuanVideo's; vgen/data/cached_video.py says how samples read them).

Resumable: files that exist are skipped, each file is written under a temporary name and
renamed. Bad rows are reported with their CSV line; data.skip_bad=true skips and counts them.
parallel.workers=N splits the rows across N msrun workers (row i goes to rank i % N): vgen-cache
starts msrun itself (worker logs in <cache_dir>/.jobs/<text|vae>/logs/), or, started under
msrun by the user, runs as one of its workers."""
import json
import logging
import os
import sys
from dataclasses import asdict
from pathlib import Path
from typing import List, Optional, Tuple

if __name__ == "__main__":  # run as msrun's task script: keep this directory from shadowing modules
    sys.path = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

from omegaconf import DictConfig, OmegaConf

from vgen.config.validate import ConfigError
from vgen.data.cache_build import DTYPES, OPTIONS, RUNNERS, Summary, report

log = logging.getLogger("vgen")
KINDS = ("text", "vae")
JOBS_DIR = ".jobs"
WORKER_MARK = "_worker"  # `cache.py _worker <job.yaml>` under msrun (a dashed flag would be msrun's own)


# ---- command line ---------------------------------------------------------------------------------

def parse_args(argv: List[str]) -> Tuple[str, List[str], dict]:
    """(kind, Hydra overrides, tool options) from `text|vae [cache.<option>=v] [overrides]`."""
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__)
        raise SystemExit(0 if argv else 2)
    kind, options, overrides = argv[0], dict(OPTIONS), []
    if kind not in KINDS:
        raise ConfigError(f"vgen-cache {kind}: the first argument is what to cache, one of {list(KINDS)}")
    for arg in argv[1:]:
        if not arg.startswith("cache."):
            overrides.append(arg)
            continue
        key, eq, value = arg[len("cache."):].partition("=")
        if key not in OPTIONS or not eq:
            raise ConfigError(f"{arg}: unknown tool option; known: " + ", ".join(f"cache.{k}=" for k in OPTIONS))
        try:
            options[key] = type(OPTIONS[key])(value)
        except ValueError:
            raise ConfigError(f"{arg}: expected a {type(OPTIONS[key]).__name__}")
    check_options(options)
    return kind, overrides, options


def check_options(options: dict) -> None:
    if options["dtype"] not in DTYPES:
        raise ConfigError(f"cache.dtype={options['dtype']!r}: expected one of {list(DTYPES)}")
    for key in ("batch_size", "chunk_frames"):
        if int(options[key]) < 1:
            raise ConfigError(f"cache.{key}={options[key]}: must be >= 1")


def compose_config(overrides: List[str]) -> DictConfig:
    """The plain, validated config of vgen-train's conf tree with these overrides, over a video data set."""
    from vgen.cli.common import compose_config as compose

    plain = compose(overrides)
    if plain.data.kind != "video":
        raise ConfigError(f"vgen-cache reads a video data set (data=video or data=webvid); this config has "
                          f"data.kind={plain.data.kind}")
    for key in ("csv_path", "cache_dir"):
        if OmegaConf.is_missing(plain.data, key) or not plain.data[key]:
            raise ConfigError(f"data.{key} is not set: give data.{key}=<path>")
    plain.data.cache_dir = os.path.abspath(plain.data.cache_dir)
    return plain


# ---- processes --------------------------------------------------------------------------------------

def job_dir(cfg, kind: str) -> Path:
    return Path(cfg.data.cache_dir) / JOBS_DIR / kind


def run_here(kind: str, cfg, options: dict) -> Summary:
    """The whole job in this process."""
    from vgen.runtime import setup_device

    setup_device(cfg.device)
    summary = Summary.merge([RUNNERS[kind](cfg, options)])
    report(kind, cfg, summary)
    return summary


def run_as_worker(kind: str, cfg, options: dict) -> Optional[Summary]:
    """This process's share under msrun; rank 0 reports the job's summary once every rank is done."""
    from vgen.runtime import setup_device  # first: it quiets MindSpore's C++ logs before MindSpore loads

    from vgen.cli.common import setup_logging
    from vgen.parallel.comm import barrier, init_distributed

    setup_device(cfg.device)  # the device is chosen before communication starts
    rank, world = init_distributed()
    setup_logging(rank)
    jobs = job_dir(cfg, kind)
    jobs.mkdir(parents=True, exist_ok=True)
    part = RUNNERS[kind](cfg, options, rank, world)
    tmp = jobs / f".summary_rank{rank}.json.tmp"
    tmp.write_text(json.dumps(asdict(part)))
    os.replace(tmp, jobs / f"summary_rank{rank}.json")
    barrier()  # every share is written
    if rank != 0:
        return None
    parts = [Summary(**json.loads((jobs / f"summary_rank{r}.json").read_text())) for r in range(world)]
    summary = Summary.merge(parts)
    report(kind, cfg, summary)
    return summary


def launch_workers(kind: str, cfg, options: dict) -> int:
    """Runs the job on parallel.workers msrun workers (as vgen-train does); returns msrun's exit code,
    non-zero within seconds of a worker's failure."""
    from vgen.parallel.launch import msrun_command, run_msrun

    jobs = job_dir(cfg, kind)
    jobs.mkdir(parents=True, exist_ok=True)  # old summary_rank*.json files are overwritten by this job's ranks
    job_file = jobs / "job.yaml"
    OmegaConf.save(OmegaConf.create({"kind": kind, "options": options, "config": cfg}), job_file)
    log.info("starting %d msrun workers (logs in %s)", cfg.parallel.workers, jobs / "logs")
    code = run_msrun(msrun_command(cfg.parallel, jobs / "logs", str(Path(__file__).resolve()), WORKER_MARK,
                                   str(job_file)))
    if code:
        log.error("vgen-cache %s failed in a worker:%s", kind, _worker_errors(jobs / "logs"))
    return code


def _worker_errors(log_dir: Path) -> str:
    """The last lines of the worker logs that report an error (msrun shows only worker 0's)."""
    out = []
    for path in sorted(log_dir.glob("worker_*.log")):
        lines = path.read_text(errors="replace").splitlines()
        if any("Error" in ln or "line " in ln for ln in lines[-20:]):
            out.append(f"\n--- {path}\n" + "\n".join(lines[-8:]))
    return "".join(out) or f" see {log_dir}"


def run(kind: str, overrides: List[str], options: Optional[dict] = None) -> Optional[Summary]:
    """The job of `vgen-cache <kind> <overrides>`: here, on msrun workers it starts, or as a worker
    of the msrun job this process belongs to. Returns the job's summary where it is known."""
    from vgen.parallel.launch import in_msrun

    options = {**OPTIONS, **(options or {})}
    check_options(options)
    cfg = compose_config(overrides)
    if in_msrun():
        return run_as_worker(kind, cfg, options)
    if cfg.parallel.workers > 1:
        code = launch_workers(kind, cfg, options)
        if code:
            raise SystemExit(code)
        return None
    return run_here(kind, cfg, options)


def worker_main(job_file: str) -> int:
    job = OmegaConf.load(job_file)
    run_as_worker(job.kind, job.config, OmegaConf.to_container(job.options))
    return 0


def main(argv: Optional[List[str]] = None) -> int:
    import vgen.runtime  # noqa: F401  (quiets MindSpore's C++ logs before MindSpore loads)
    from vgen.cli.common import setup_logging, user_errors

    argv = sys.argv[1:] if argv is None else list(argv)
    setup_logging()
    with user_errors():
        if argv[:1] == [WORKER_MARK]:
            return worker_main(argv[1])
        kind, overrides, options = parse_args(argv)
        run(kind, overrides, options)
    return 0


if __name__ == "__main__":
    sys.exit(main())
