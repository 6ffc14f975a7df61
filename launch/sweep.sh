#!/usr/bin/env bash
# A sweep: one training job (msrun when the parallel settings need it) per point of the
# comma-separated overrides, each in its own run directory (the run directory is named by the
# overrides). Hydra's --multirun runs the points one after another.
#
#   launch/sweep.sh experiment=opensora/v1_0_stage1 schedule.lr=1e-4,2e-4
set -euo pipefail
# VGEN_TRAIN: the training command (default vgen-train; may carry arguments, e.g. "python -m vgen.cli.train")
read -r -a train <<< "${VGEN_TRAIN:-vgen-train}"
exec "${train[@]}" --multirun "$@"
