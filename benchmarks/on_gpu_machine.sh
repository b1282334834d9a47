#!/usr/bin/env bash
# The learner's figures on a GPU machine that has Python with CUDA PyTorch but no network and no
# distgfn install: distgfn runs from this checkout (the learner needs neither Ray nor gRPC),
# RDKit and any other missing package comes as wheels in $WHEELS, the sEH proxy's data as a
# folder in $DATA. Prints the GPU, then benchmarks/learner_device.py (CPU and CUDA updates/s for
# the HyperGrid MLP and the fragment GNN at batch 16, 64 and 256, and a learner.device=cuda
# training run beside the same run on the CPU); a copy goes to $OUT/learner_device.txt when
# OUT is set. About 3 minutes. Preparing it and running it: docs/benchmarks.md, "The learner on
# a GPU".
#
#     WHEELS=.device/whl DATA=.device/seh bash benchmarks/on_gpu_machine.sh [learner_device.py's options]
set -euo pipefail
cd "$(dirname "$0")/.."
WHEELS=${WHEELS:-.device/whl}
DATA=${DATA:-.device/seh}
if compgen -G "$WHEELS/*.whl" > /dev/null; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/distgfn-site \
        "$WHEELS"/*.whl
    export PYTHONPATH=/tmp/distgfn-site${PYTHONPATH:+:$PYTHONPATH}
fi
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1 OMP_NUM_THREADS=1
if [ ! -d "$DATA" ]; then
    echo "on_gpu_machine: no sEH data folder at $DATA (DATA=...): the fragment GNN is skipped" >&2
fi
if command -v nvidia-smi > /dev/null; then
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
fi
python3 -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available())"
data_args=()
if [ -d "$DATA" ]; then data_args=(--data-dir "$DATA"); fi
python3 benchmarks/learner_device.py ${data_args[@]+"${data_args[@]}"} "$@" 2>&1 | tee "${OUT:-/tmp}/learner_device.txt"
