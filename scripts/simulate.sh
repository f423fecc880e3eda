#!/usr/bin/env bash
# Set up .venv if needed, then run a federated simulation with `flwr run .`.
# Extra arguments go to flwr run, e.g.:
#   bash scripts/simulate.sh --run-config simulations/scenarios/digits-noniid.toml
#   bash scripts/simulate.sh --federation-config "num-supernodes=10"
# Outputs go to $FEDSILO_HOME/artifacts/<run-name>/ (default ~/.fedsilo/artifacts);
# the last log line says where.
set -euo pipefail
cd "$(dirname "$0")/.."
# FEDSILO_SKIP_SETUP=1: the environment is set up already (the tests run in it)
[ "${FEDSILO_SKIP_SETUP:-}" = 1 ] || bash scripts/setup.sh
# Run in this environment: no per-run reinstall of the app's dependencies (offline-safe).
export FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION=1
# flwr starts flower-superlink by name: it must come from this environment
export PATH="$PWD/.venv/bin:$PATH"
export FLWR_HOME="${FLWR_HOME:-$PWD/.flwr}"
if [ ! -f "$FLWR_HOME/config.toml" ]; then
    # The local SuperLink that flwr run starts keeps its state in memory: a simulation
    # needs none of it afterwards (fedsilo's own checkpoints are in the run folder).
    .venv/bin/python -c 'import sys; from pathlib import Path
from simulations.flower_config import write_flower_config
write_flower_config(Path(sys.argv[1]), in_memory=True)' "$FLWR_HOME"
fi
port="${FLWR_LOCAL_SUPERLINK_HTTP_API_PORT:-39091}"
already_running=$(pgrep -f "flower-superlink.*--port $port" || true)
stop_superlink() {
    # Stop the local SuperLink that `flwr run` started for us (it would keep running).
    if [ -z "$already_running" ]; then
        pkill -f "flower-superlink.*--port $port" 2>/dev/null || true
    fi
}
trap stop_superlink EXIT
.venv/bin/flwr run . --stream "$@"
