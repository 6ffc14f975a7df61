"""Wall time and peak memory of `vgen-inspect` on the full-size models (declared, never allocated),
each in a fresh process, next to the bare `import mindspore` of that process.

    .venv/bin/python benchmarks/inspect_models.py [--models opensora_stdit,opensora_stdit2,hunyuan]
"""
import argparse
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


# runs a module as __main__, then prints its own peak RSS (VmHWM, GiB) as the last line
WRAPPER = ("import runpy, sys; sys.argv = sys.argv[1:]; "
           "runpy.run_module(sys.argv[0], run_name='__main__') if sys.argv[0] != '-' else __import__('mindspore'); "
           "from vgen.runtime import memory_gb; print(memory_gb('VmHWM'))")


def run(module, *args):
    """(seconds, peak RSS GB of the child, the child's total_params line)."""
    t0 = time.perf_counter()
    r = subprocess.run([sys.executable, "-c", WRAPPER, module, *args], capture_output=True, text=True,
                       cwd=str(REPO), check=True)
    dt = time.perf_counter() - t0
    lines = r.stdout.strip().splitlines()
    total = next((line for line in lines if line.startswith("total_params")), "")
    return dt, float(lines[-1]), total


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--models", default="opensora_stdit,opensora_stdit2,hunyuan,hunyuan_vae")
    args = ap.parse_args()
    base_t, base_rss, _ = run("-")
    print(f"{'':18s} {'seconds':>8s} {'peak RSS GB':>12s}  result")
    print(f"{'import mindspore':18s} {base_t:8.2f} {base_rss:12.2f}")
    for model in args.models.split(","):
        t, rss, total = run("vgen.cli.inspect_model", f"model={model}")
        print(f"{model:18s} {t:8.2f} {rss:12.2f}  {total}")
    print("each row is a fresh process; peak RSS includes the MindSpore import")


if __name__ == "__main__":
    main()
