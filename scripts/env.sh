# Source this file to use the environment scripts/setup.sh made: `. scripts/env.sh`
# It activates the virtual environment, points the ament index at it and keeps DDS on this machine.
_ditta_root="$(cd "$(dirname "${BASH_SOURCE[0]:-$0}")/.." && pwd)"
export DITTA_VENV="${DITTA_VENV:-$_ditta_root/.venv}"
export VIRTUAL_ENV="$DITTA_VENV"
export PATH="$DITTA_VENV/bin:$PATH"
export AMENT_PREFIX_PATH="$DITTA_VENV${AMENT_PREFIX_PATH:+:$AMENT_PREFIX_PATH}"
export ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST
export FASTDDS_DEFAULT_PROFILES_FILE="$_ditta_root/config/fastdds_localhost.xml"
export RMW_IMPLEMENTATION=rmw_fastrtps_cpp
unset _ditta_root
