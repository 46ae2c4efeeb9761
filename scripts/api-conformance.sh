#!/usr/bin/env bash
# Checks a testfarm server against its own OpenAPI document: the document validates as
# OpenAPI, and schemathesis (every check, every phase) finds no answer the document does
# not describe and no schema-valid request refused for its shape.
#
#   scripts/api-conformance.sh URL TOKEN_FILE [MAX_SECONDS] [AGENT_TOKEN_FILE]
#
# URL is the server's base URL (http://127.0.0.1:8080), TOKEN_FILE holds an admin token.
# With AGENT_TOKEN_FILE the agent protocol (tag `agents`) is fuzzed with that agent token
# too (an admin may not act as an agent, so it only sees 403 there). The run is bounded by
# MAX_SECONDS (default 120) and seeded (SCHEMATHESIS_SEED, default 20261203) so it is the
# same run every time. Tools are pinned and installed into a virtualenv
# (API_CONFORMANCE_VENV, default ~/.cache/testfarm/api-conformance-venv).
#
# It stresses the server: point it at a throw-away server, never at a production lab
# (the stateful phase creates and deletes resources, tokens, groups and leases).
set -euo pipefail

url="${1:?usage: $0 URL TOKEN_FILE [MAX_SECONDS] [AGENT_TOKEN_FILE]}"
token_file="${2:?usage: $0 URL TOKEN_FILE [MAX_SECONDS] [AGENT_TOKEN_FILE]}"
max_time="${3:-120}"
agent_token_file="${4:-}"
seed="${SCHEMATHESIS_SEED:-20261203}"
here="$(cd "$(dirname "$0")" && pwd)"
venv="${API_CONFORMANCE_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/testfarm/api-conformance-venv}"

if ! "$venv/bin/st" --version 2>/dev/null | grep -qF "$(sed -n 's/^schemathesis==//p' "$here/api-conformance.requirements")"; then
  echo "installing schemathesis and openapi-spec-validator into $venv"
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q --disable-pip-version-check -r "$here/api-conformance.requirements"
fi

token="$(tr -d '[:space:]' <"$token_file")"
doc="$(mktemp --suffix=.json)"
trap 'rm -f "$doc"' EXIT
curl -fsS -H "Authorization: Bearer $token" "$url/api/v1/openapi.json" -o "$doc"
echo "openapi-spec-validator:"
"$venv/bin/openapi-spec-validator" "$doc"

run() {
  SCHEMATHESIS_HOOKS="$here/schemathesis_hooks.py" "$venv/bin/st" --config-file "$here/schemathesis.toml" run "$doc" --url "$url" \
    --checks all --phases examples,coverage,fuzzing,stateful \
    --seed "$seed" --max-time "$1" --no-color "${@:2}"
}

status=0
if [ -n "$agent_token_file" ]; then
  agent_token="$(tr -d '[:space:]' <"$agent_token_file")"
  share=$((max_time / 4))
  echo "schemathesis, agent protocol with an agent token (${share}s):"
  run "$share" -H "Authorization: Bearer $agent_token" --include-tag agents || status=1
  echo "schemathesis, everything else with an admin token ($((max_time - share))s):"
  run "$((max_time - share))" -H "Authorization: Bearer $token" --exclude-tag agents || status=1
else
  echo "schemathesis (${max_time}s):"
  run "$max_time" -H "Authorization: Bearer $token" || status=1
fi
exit "$status"
