#!/usr/bin/env bash
# Create (or update) srcube's Prefect work pools. Run once per Prefect server, before starting the
# worker (k8s/base/prefect-worker.yaml starts it with --no-create-pool-if-not-found), and again after
# editing the template. Needs PREFECT_API_URL (and PREFECT_API_KEY for Prefect Cloud) in the environment.
#
#   srcube-k8s    Kubernetes worker pool: each flow run is a Job in namespace srcube built from
#                 srcube-k8s-base-job-template.json (image, GPU, ConfigMap/Secret refs, DaskCluster spec).
#   srcube-local  process pool: flow runs as local subprocesses of `prefect worker start --pool srcube-local`
#                 (development, or one machine with a GPU).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"

prefect work-pool create srcube-k8s --type kubernetes \
    --base-job-template "$here/srcube-k8s-base-job-template.json" --overwrite
prefect work-pool create srcube-local --type process --overwrite

prefect work-pool inspect srcube-k8s > /dev/null
echo "work pools srcube-k8s and srcube-local are ready"
