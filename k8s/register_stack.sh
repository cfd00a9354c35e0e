#!/usr/bin/env bash
# Register the ZenML stack that runs the pipeline on Kubernetes: every step a Kubeflow Pipelines task
# (ORCHESTRATOR=kubeflow), or only the `model_trainer` step in a GPU pod of the Kubernetes step operator.
#
#   orchestrator     local (default: this machine drives the run), kubernetes (a pod drives it), or
#                    kubeflow (the udon_kubeflow flavor, pipelines/cluster/kubeflow.py: each step a KFP task)
#   step operator    kubernetes (one GPU pod), or trainjob (the udon_trainjob flavor, pipelines/cluster/
#                    trainjob_operator.py: model_trainer as a multi-node Kubeflow Trainer v2 TrainJob); namespace
#                    and runtime taken from configs/cluster.yaml (none with kubeflow: no need)
#   artifact store   s3 (AWS S3, MinIO, Ceph RGW or any S3 API; set S3_ENDPOINT_URL for non-AWS)
#   container reg.   any registry the cluster can pull from
#   image builder    none needed with the prebuilt image (configs/cluster.yaml zenml_skip_build: true);
#                    kaniko builds inside the cluster otherwise (no local Docker engine either way)
#   tracker/registry MLflow tracking server + its model registry
#
# Then: udon run --config configs/uned.yaml --cluster configs/cluster.yaml (the train step's GPUs and pod
# settings come from the cluster configuration). Nothing here is tied to one cloud. Run it from the repository
# root, logged in to a ZenML server (`zenml login https://zenml.example.com`): step pods report to the server,
# a local SQLite store cannot work.
# Existing components of the same name are kept (delete them to change them); DRY_RUN=1 prints the commands.
#
# Variables (required ones have no default):
#   ARTIFACT_STORE_PATH     s3://bucket/prefix for ZenML artifacts                    (required)
#   CONTAINER_REGISTRY_URI  e.g. registry.example.com/udon                           (required)
#   MLFLOW_TRACKING_URI     e.g. http://mlflow.mlflow.svc.cluster.local:5000           (required)
#   STACK_NAME              name of the stack                                         [udon-k8s]
#   CLUSTER_CONFIG          the cluster configuration (namespace, image)              [configs/cluster.yaml]
#   KUBE_CONTEXT            kubeconfig context to submit from; empty: in-cluster       [current context]
#   ORCHESTRATOR            local | kubernetes | kubeflow                             [local]
#   STEP_OPERATOR           kubernetes | trainjob (not with ORCHESTRATOR=kubeflow)    [kubernetes]
#   KUBEFLOW_HOSTNAME       KFP API, e.g. https://kubeflow.example.com/pipeline  (required with kubeflow)
#   KUBEFLOW_USER_NAMESPACE multi-user Kubeflow: the profile namespace runs go to       [unset]
#   KUBEFLOW_USERNAME       with KUBEFLOW_PASSWORD: Dex login, stored as secret udon_kubeflow [unset: none]
#   KUBEFLOW_PASSWORD
#   KUBEFLOW_TIMEOUT        seconds `udon run` waits for a KFP run (training takes hours) [86400]
#   IMAGE_BUILDER           prebuilt | kaniko                                         [prebuilt]
#   S3_ENDPOINT_URL         S3 API endpoint for MinIO & co., e.g. http://minio.minio:9000   [unset: AWS]
#   AWS_ACCESS_KEY_ID       with AWS_SECRET_ACCESS_KEY: stored as ZenML secret udon_s3 [unset: the pods'
#   AWS_SECRET_ACCESS_KEY     and client's own credentials (IAM role, workload identity, env)]
#   MLFLOW_TRACKING_USERNAME  with MLFLOW_TRACKING_PASSWORD: stored as secret udon_mlflow   [unset: none]
#   MLFLOW_TRACKING_PASSWORD
#   PYTHON                  python with zenml and this project installed               [.venv/bin/python or python]
#   ZENML                   the zenml command                                          [zenml]
#   REQUIRE_SERVER          1: refuse to run against a local ZenML store               [1]
#   DRY_RUN                 1: print the zenml commands instead of running them        [0]
set -euo pipefail

: "${ARTIFACT_STORE_PATH:?set ARTIFACT_STORE_PATH, e.g. s3://my-bucket/zenml}"
: "${CONTAINER_REGISTRY_URI:?set CONTAINER_REGISTRY_URI, e.g. registry.example.com/udon}"
: "${MLFLOW_TRACKING_URI:?set MLFLOW_TRACKING_URI, e.g. http://mlflow.mlflow.svc.cluster.local:5000}"
STACK_NAME="${STACK_NAME:-udon-k8s}"
CLUSTER_CONFIG="${CLUSTER_CONFIG:-configs/cluster.yaml}"
KUBE_CONTEXT="${KUBE_CONTEXT-$(kubectl config current-context 2>/dev/null || true)}"
ORCHESTRATOR="${ORCHESTRATOR:-local}"
STEP_OPERATOR="${STEP_OPERATOR:-kubernetes}"
IMAGE_BUILDER="${IMAGE_BUILDER:-prebuilt}"
S3_ENDPOINT_URL="${S3_ENDPOINT_URL:-}"
REQUIRE_SERVER="${REQUIRE_SERVER:-1}"
DRY_RUN="${DRY_RUN:-0}"
ZENML="${ZENML:-zenml}"
if [[ -z "${PYTHON:-}" ]]; then
  if [[ -x .venv/bin/python ]]; then PYTHON=.venv/bin/python; else PYTHON=python; fi
fi

case "$ORCHESTRATOR" in local|kubernetes|kubeflow) ;; *) echo "ORCHESTRATOR must be local, kubernetes or kubeflow" >&2; exit 2;; esac
case "$STEP_OPERATOR" in kubernetes|trainjob) ;; *) echo "STEP_OPERATOR must be kubernetes or trainjob" >&2; exit 2;; esac
if [[ "$ORCHESTRATOR" == kubeflow && "$STEP_OPERATOR" == trainjob ]]; then
  echo "STEP_OPERATOR=trainjob needs ORCHESTRATOR local or kubernetes (a Kubeflow Pipelines stack runs no step operator)" >&2
  exit 2
fi
if [[ "$ORCHESTRATOR" == kubeflow ]]; then
  : "${KUBEFLOW_HOSTNAME:?set KUBEFLOW_HOSTNAME, e.g. https://kubeflow.example.com/pipeline}"
fi
KUBEFLOW_TIMEOUT="${KUBEFLOW_TIMEOUT:-86400}"
case "$IMAGE_BUILDER" in prebuilt|kaniko) ;; *) echo "IMAGE_BUILDER must be prebuilt or kaniko" >&2; exit 2;; esac
if [[ "$ARTIFACT_STORE_PATH" != s3://* ]]; then echo "ARTIFACT_STORE_PATH must start with s3://" >&2; exit 2; fi

# The namespace comes from the one cluster configuration, so the step operator and the manifests agree.
cluster="$("$PYTHON" -c 'import sys; from pipelines.cluster import load_cluster_config as load; c = load(sys.argv[1]); print(c.namespace, str(c.zenml_skip_build).lower(), c.trainjob_runtime, c.trainjob_runtime_kind)' "$CLUSTER_CONFIG")"
read -r NAMESPACE SKIP_BUILD TRAINJOB_RUNTIME TRAINJOB_RUNTIME_KIND <<< "$cluster"
if [[ "$IMAGE_BUILDER" == prebuilt && "$SKIP_BUILD" != true ]]; then
  echo "IMAGE_BUILDER=prebuilt needs zenml_skip_build: true in $CLUSTER_CONFIG (or use IMAGE_BUILDER=kaniko)" >&2
  exit 2
fi

run() {
  if [[ "$DRY_RUN" == 1 ]]; then printf '%q ' "$@" | sed -e 's/ $//'; echo; else "$@"; fi
}

if [[ "$DRY_RUN" != 1 && "$REQUIRE_SERVER" == 1 ]]; then
  if ! "$PYTHON" -c 'import sys; from zenml.client import Client; sys.exit(Client().zen_store.type.value != "rest")'; then
    echo "not connected to a ZenML server: run \`zenml login <server url>\` first (pods cannot reach a local store)" >&2
    exit 2
  fi
fi

# component TYPE NAME ARGS...: register unless a component of that name exists.
component() {
  local type="$1" name="$2"; shift 2
  if [[ "$DRY_RUN" != 1 ]] && "$ZENML" "$type" describe "$name" >/dev/null 2>&1; then
    echo "$type $name exists, kept"
  else
    run "$ZENML" "$type" register "$name" "$@"
  fi
}

# secret NAME KEY=ENV_VAR...: a ZenML secret whose values are read from the named environment variables.
secret() {
  local name="$1"; shift
  if [[ "$DRY_RUN" != 1 ]] && "$ZENML" secret get "$name" >/dev/null 2>&1; then
    echo "secret $name exists, kept"
  elif [[ "$DRY_RUN" == 1 ]]; then
    echo "$ZENML secret create $name --values=@<JSON of $*>"
  else
    # why: through a private temporary file, so the values never appear in the process list or shell history.
    local values; values="$(mktemp)"
    "$PYTHON" -c 'import json, os, sys; print(json.dumps({k: os.environ[v] for k, v in (a.split("=", 1) for a in sys.argv[1:])}))' "$@" > "$values"
    "$ZENML" secret create "$name" --values="@$values" || { rm -f "$values"; return 1; }
    rm -f "$values"
  fi
}

kube_args=()
if [[ -n "$KUBE_CONTEXT" ]]; then kube_args+=(--kubernetes_context="$KUBE_CONTEXT"); else kube_args+=(--incluster=true); fi

# --- artifact store
s3_args=(--flavor=s3 --path="$ARTIFACT_STORE_PATH")
if [[ -n "${AWS_ACCESS_KEY_ID:-}" && -n "${AWS_SECRET_ACCESS_KEY:-}" ]]; then
  secret udon_s3 aws_access_key_id=AWS_ACCESS_KEY_ID aws_secret_access_key=AWS_SECRET_ACCESS_KEY
  # why: `--secret` of `register` attaches ZenML secrets and shadows the s3 config field of that name; the
  # authentication secret (AWSSecretSchema keys) is the s3 store's own way to take credentials.
  s3_args+=(--authentication_secret=udon_s3)
fi
if [[ -n "$S3_ENDPOINT_URL" ]]; then s3_args+=(--client_kwargs="{\"endpoint_url\": \"$S3_ENDPOINT_URL\"}"); fi
component artifact-store udon-s3 "${s3_args[@]}"

# --- container registry and image builder
component container-registry udon-registry --flavor=default --uri="$CONTAINER_REGISTRY_URI"
if [[ "$IMAGE_BUILDER" == kaniko ]]; then
  if [[ -z "$KUBE_CONTEXT" ]]; then echo "IMAGE_BUILDER=kaniko needs KUBE_CONTEXT (kaniko pods are started from it)" >&2; exit 2; fi
  # why: the build context goes through the artifact store, so nothing needs a Docker engine or a shared disk.
  component image-builder udon-kaniko --flavor=kaniko --kubernetes_context="$KUBE_CONTEXT" \
    --kubernetes_namespace="$NAMESPACE" --store_context_in_artifact_store=true
  builder=udon-kaniko
else
  # why: the step operator's stack validation requires an image builder even when no image is built; with
  # DockerSettings(skip_build=True) (pipelines.cluster.docker_settings) this one is never invoked.
  component image-builder udon-prebuilt --flavor=local
  builder=udon-prebuilt
fi

# --- orchestrator, and the step operator in the training namespace where the orchestrator needs one
orchestrator=default
if [[ "$STEP_OPERATOR" == trainjob ]]; then step_operator=(-s udon-trainjob); else step_operator=(-s udon-k8s-gpu); fi
if [[ "$ORCHESTRATOR" == kubeflow ]]; then
  # why our flavor: ZenML's own kubeflow flavor drops the train step's GPU and memory under KFP 2.x.
  if [[ "$DRY_RUN" != 1 ]] && "$ZENML" orchestrator flavor describe udon_kubeflow >/dev/null 2>&1; then
    echo "flavor udon_kubeflow exists, kept"
  else
    run "$ZENML" orchestrator flavor register pipelines.cluster.kubeflow.UdonKubeflowOrchestratorFlavor
  fi
  kfp_args=(--flavor=udon_kubeflow --kubeflow_hostname="$KUBEFLOW_HOSTNAME" --synchronous=true
            --timeout="$KUBEFLOW_TIMEOUT")
  if [[ -n "${KUBEFLOW_USER_NAMESPACE:-}" ]]; then kfp_args+=(--user_namespace="$KUBEFLOW_USER_NAMESPACE"); fi
  if [[ -n "${KUBEFLOW_USERNAME:-}" && -n "${KUBEFLOW_PASSWORD:-}" ]]; then
    secret udon_kubeflow username=KUBEFLOW_USERNAME password=KUBEFLOW_PASSWORD
    kfp_args+=(--client_username='{{udon_kubeflow.username}}' --client_password='{{udon_kubeflow.password}}')
  fi
  component orchestrator udon-kfp "${kfp_args[@]}"
  orchestrator=udon-kfp
  step_operator=()
elif [[ "$STEP_OPERATOR" == trainjob ]]; then
  # why our flavor: ZenML 0.98 has no TrainJob step operator; its settings carry upstream's names (k8s/README.md).
  if [[ "$DRY_RUN" != 1 ]] && "$ZENML" step-operator flavor describe udon_trainjob >/dev/null 2>&1; then
    echo "flavor udon_trainjob exists, kept"
  else
    run "$ZENML" step-operator flavor register pipelines.cluster.trainjob_operator.TrainJobStepOperatorFlavor
  fi
  component step-operator udon-trainjob --flavor=udon_trainjob --kubernetes_namespace="$NAMESPACE" \
    --runtime_ref_name="$TRAINJOB_RUNTIME" --runtime_ref_kind="$TRAINJOB_RUNTIME_KIND" "${kube_args[@]}"
else
  component step-operator udon-k8s-gpu --flavor=kubernetes --kubernetes_namespace="$NAMESPACE" "${kube_args[@]}"
fi
if [[ "$ORCHESTRATOR" == kubernetes ]]; then
  component orchestrator udon-k8s-orchestrator --flavor=kubernetes --kubernetes_namespace="$NAMESPACE" \
    "${kube_args[@]}"
  orchestrator=udon-k8s-orchestrator
fi

# --- MLflow tracking server and model registry
mlflow_args=(--flavor=mlflow --tracking_uri="$MLFLOW_TRACKING_URI")
if [[ -n "${MLFLOW_TRACKING_USERNAME:-}" && -n "${MLFLOW_TRACKING_PASSWORD:-}" ]]; then
  secret udon_mlflow username=MLFLOW_TRACKING_USERNAME password=MLFLOW_TRACKING_PASSWORD
  mlflow_args+=(--tracking_username='{{udon_mlflow.username}}' --tracking_password='{{udon_mlflow.password}}')
fi
component experiment-tracker udon-mlflow-server "${mlflow_args[@]}"
component model-registry udon-mlflow-server-registry --flavor=mlflow

# --- the stack
if [[ "$DRY_RUN" != 1 ]] && "$ZENML" stack describe "$STACK_NAME" >/dev/null 2>&1; then
  echo "stack $STACK_NAME exists, kept"
else
  run "$ZENML" stack register "$STACK_NAME" -o "$orchestrator" -a udon-s3 -c udon-registry -i "$builder" \
    "${step_operator[@]}" -e udon-mlflow-server -r udon-mlflow-server-registry
fi
echo "next: zenml stack set $STACK_NAME && udon run --config configs/uned.yaml --cluster $CLUSTER_CONFIG (k8s/README.md)"
