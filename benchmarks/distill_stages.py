"""Seconds per step of each T2V-Turbo stage (experiment=vc2/t2v_turbo_stage{1,2,3}: consistency
distillation; + the HPSv2.1 image reward; + the InternVideo2 video reward), scaled down to the
tiny VideoCrafter2 student and the tiny reward models on synthetic latents, compiled (jit) as
users train. Each stage runs in its own process; prints the first step (compile included), the
median of the others and the peak RSS, and each stage's ratio to stage 1.

    .venv/bin/python benchmarks/distill_stages.py [--steps 6] [--frames 8]
"""
import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _util import REPO, compose, peak_rss_gb  # noqa: E402

TINY = ["model=vc2_tiny", "model.channel_mult=[1,2]", "model.attention_resolutions=[1]", "model.time_cond_proj_dim=16",
        "model.model_channels=16", "model.lora.rank=4", "model.lora.alpha=4", "precision=fp32",
        "schedule.epochs=null", "schedule.warmup_steps=0", "schedule.grad_accum=1", "schedule.log_every=1",
        "schedule.ckpt_every=100000", "progress=false", "distill.image_reward.frames=2",
        "distill.video_reward.frames=2"]


def measure(stage: int, steps: int, frames: int, root: Path) -> dict:
    from omegaconf import OmegaConf

    sys.path.insert(0, str(REPO / "tests"))
    from tiny_tokenizers import write_clip_tokenizer
    from vgen.data.synthetic import CAPTION_WORDS
    from vgen.train.trainer import Trainer

    clip = write_clip_tokenizer(root / "clip_tokenizer.json", CAPTION_WORDS)
    (root / "vocab.txt").write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *CAPTION_WORDS]) + "\n")
    cfg = compose([f"experiment=vc2/t2v_turbo_stage{stage}", *TINY, f"model.input_size=[{frames},8,8]",
                   f"schedule.max_steps={steps}", f"distill.image_reward.tokenizer={clip}",
                   f"distill.video_reward.tokenizer={root}"])
    cfg.data = OmegaConf.create({"kind": "synthetic", "skip_bad": False, "text_dropout": 0.0, "prefetch": 2,
                                 "num_samples": 16, "latent_size": None, "text_len": None, "min_text_len": 4,
                                 "shuffle": True})
    if stage > 1:
        cfg.distill.image_reward.model = "hpsv2.1-tiny"
    if stage > 2:
        cfg.distill.video_reward.model = "internvideo2-s2-tiny"
    Trainer(cfg, root / "run").setup().run()
    times = [json.loads(line)["step_time_s"] for line in (root / "run" / "metrics.jsonl").read_text().splitlines()]
    return {"first_s": times[0], "median_s": statistics.median(times[1:]), "peak_rss_gb": peak_rss_gb()}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--frames", type=int, default=8, help="latent (= pixel) frames of the tiny student")
    ap.add_argument("--measure", type=int, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.measure is not None:
        with tempfile.TemporaryDirectory() as d:
            print(json.dumps(measure(args.measure, args.steps, args.frames, Path(d))))
        return
    rows = {}
    for stage in (1, 2, 3):
        r = subprocess.run([sys.executable, __file__, "--measure", str(stage), "--steps", str(args.steps),
                            "--frames", str(args.frames)], stdout=subprocess.PIPE, text=True, check=True)
        rows[stage] = json.loads(r.stdout.strip().splitlines()[-1])
    print(f"T2V-Turbo stages, tiny VC2 student ({args.frames} frames of 64 x 64, batch 1), jit, "
          f"median of {args.steps - 1} steps after the first")
    what = {1: "consistency distillation", 2: "+ image reward (HPSv2.1 tiny)", 3: "+ video reward (InternVideo2 tiny)"}
    for stage, r in rows.items():
        print(f"  stage {stage} {what[stage]:36s} {r['median_s']:6.3f} s/step  (x{r['median_s'] / rows[1]['median_s']:.2f}"
              f" of stage 1)  first step {r['first_s']:6.1f} s  peak RSS {r['peak_rss_gb']:.2f} GB")


if __name__ == "__main__":
    main()
