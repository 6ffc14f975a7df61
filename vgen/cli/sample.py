"""vgen-sample: videos from prompts with any family, from a checkpoint, official weights or the
seeded initialisation; the same config groups as vgen-train.

    vgen-sample model=opensora_stdit_tiny sample.checkpoint=runs/quickstart/default \\
        sample.prompts='["a red circle moving left on a black background"]' sample.seed=1
    vgen-sample model=stepvideo model.pretrained=<converted DiT> model.text_encoder.path=... \\
        sample.prompt_file=prompts.txt parallel=sp8 parallel.workers=8

With parallel.workers > 1 it starts msrun workers that read the frozen config
(<out>/sample_config.yaml) and logs to <out>/logs."""

import hydra
from omegaconf import DictConfig, OmegaConf

from ..config.store import register_configs
from .common import CONF_PATH, launch_workers, prepare, setup_logging, user_errors


@hydra.main(config_path=CONF_PATH, config_name="train", version_base=None)
def _main(cfg: DictConfig) -> None:
    setup_logging()
    with user_errors():
        from ..parallel.launch import in_msrun
        from ..sample.run import find_checkpoint, out_folder, read_prompts, sample

        plain = prepare(cfg)
        read_prompts(plain.sample)  # no prompts: say so before anything is built
        if plain.parallel.workers > 1 and not in_msrun():
            from ..train.checkpoint import write_text_atomic

            ckpt, run = find_checkpoint(plain.sample.checkpoint) if plain.sample.checkpoint else (None, None)
            folder = out_folder(plain, ckpt, run)
            folder.mkdir(parents=True, exist_ok=True)
            frozen = folder / "sample_config.yaml"
            write_text_atomic(frozen, OmegaConf.to_yaml(plain))
            launch_workers(plain.parallel, folder / "logs", frozen, "sample")
            return
        sample(plain)


def main() -> None:
    register_configs()
    _main()


if __name__ == "__main__":
    main()
