# Shared by the chaos scripts: find this compose project's containers, with
# Compose v2 (`docker compose`) or v1 (`docker-compose`). They act only on
# the brokers of the project in deploy/compose.yaml (project name: the
# BROOK_PROJECT variable, else Compose's default, the directory name).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
compose_file="$here/../compose.yaml"
if docker compose version >/dev/null 2>&1; then
  compose=(docker compose -f "$compose_file")
else
  compose=(docker-compose -f "$compose_file")
fi
if [[ -n "${BROOK_PROJECT:-}" ]]; then
  compose+=(-p "$BROOK_PROJECT")
fi

# The container id of broker NODE (1, 2, 3 or brook-N).
container_of() {
  local node="${1#brook-}"
  [[ "$node" =~ ^[1-3]$ ]] || { echo "error: NODE must be 1, 2 or 3 (or brook-1..3), not '$1'" >&2; exit 2; }
  local id
  id="$("${compose[@]}" ps -a -q "brook-$node")"
  [[ -n "$id" ]] || { echo "error: brook-$node is not running in this compose project" >&2; exit 1; }
  echo "$id"
}

# The compose network the brokers share, found by the labels Compose v1 and
# v2 both put on it (v1 and v2 name networks alike today, but the labels
# are what both promise).
network_of() {
  local project network
  project="$(docker inspect -f '{{index .Config.Labels "com.docker.compose.project"}}' "$1")"
  network="$(docker network ls --format "{{.Name}}" --filter "label=com.docker.compose.project=$project" \
    --filter "label=com.docker.compose.network=brook")"
  [[ -n "$network" ]] || network="${project}_brook"
  echo "$network"
}

usage_if_asked() {
  if [[ "${1:-}" == "-h" || "${1:-}" == "--help" || -z "${1:-}" ]]; then
    sed -n '2,/^$/p' "$0" | sed 's/^# \{0,1\}//'
    [[ -z "${1:-}" ]] && exit 2 || exit 0
  fi
}
