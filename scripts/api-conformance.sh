#!/usr/bin/env bash
# Checks a testfarm server against its own OpenAPI document: the document validates as
# OpenAPI, and schemathesis (every check, every phase) finds no answer the document does
# not describe and no schema-valid request refused for its shape.
#
#   scripts/api-conformance.sh URL TOKEN_FILE [EXAMPLES] [AGENT_TOKEN_FILE]
#
# URL is the server's base URL (http://127.0.0.1:8080), TOKEN_FILE holds an admin token.
# With AGENT_TOKEN_FILE the agent protocol (tag `agents`) is fuzzed with that agent token
# too (an admin may not act as an agent, so it only sees 403 there). Each operation gets
# EXAMPLES generated cases per phase (default 40: about 90 s against a local server) from a
# fixed seed (SCHEMATHESIS_SEED, default 20261203), so every run makes the same requests
# in the same number; a time budget would make the count depend on the machine's speed.
# Each pass is also cut off at 10 minutes, so a hung server fails the run instead of
# holding it. Tools are pinned and installed into a virtualenv
# (API_CONFORMANCE_VENV, default ~/.cache/testfarm/api-conformance-venv).
#
# It stresses the server: point it at a throw-away server, never at a production lab
# (the stateful phase creates and deletes resources, tokens, groups and leases).
set -euo pipefail

url="${1:?usage: $0 URL TOKEN_FILE [EXAMPLES] [AGENT_TOKEN_FILE]}"
token_file="${2:?usage: $0 URL TOKEN_FILE [EXAMPLES] [AGENT_TOKEN_FILE]}"
examples="${3:-40}"
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
  SCHEMATHESIS_HOOKS="$here/schemathesis_hooks.py" timeout 600 "$venv/bin/st" \
    --config-file "$here/schemathesis.toml" run "$doc" --url "$url" \
    --checks all --phases examples,coverage,fuzzing,stateful \
    --seed "$seed" --max-examples "$examples" --no-color "$@"
}

status=0
if [ -n "$agent_token_file" ]; then
  agent_token="$(tr -d '[:space:]' <"$agent_token_file")"
  echo "schemathesis, agent protocol with an agent token:"
  run -H "Authorization: Bearer $agent_token" --include-tag agents || status=1
  echo "schemathesis, everything else with an admin token:"
  run -H "Authorization: Bearer $token" --exclude-tag agents || status=1
else
  echo "schemathesis:"
  run -H "Authorization: Bearer $token" || status=1
fi
exit "$status"
