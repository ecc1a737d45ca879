#!/usr/bin/env bash
# Azure side of an envship installation on AKS (docs/deploy.md, steps 2 and 3):
#
#   1. turn on the cluster's OIDC issuer and workload identity;
#   2. create a user-assigned managed identity for envship;
#   3. trust the chart's service account with a federated credential on that identity;
#   4. grant the identity AcrPush on the registry and Key Vault Secrets User on the vault, and
#      with ENGINE=acr a role that may schedule ACR Tasks runs on the registry;
#   5. let the cluster's nodes pull from the registry, and (ENGINE=dind) import the docker:dind
#      image into it;
#   6. optionally, the Secrets Store CSI driver and the application routing add-ons.
#
# It expects an existing resource group, AKS cluster, container registry and key vault (the vault
# with Azure RBAC authorization), and an `az login` with rights to create identities and role
# assignments (Owner or User Access Administrator on the registry and the vault; with ENGINE=acr
# and the custom role, also the right to create role definitions in the registry's resource
# group). It prints the identity's client id and tenant id and the other values the chart needs.
# No secret value is created, read or printed here.
#
# Usage (the names are examples):
#
#   RESOURCE_GROUP=ml-platform AKS_NAME=ml-aks ACR_NAME=myacr KEYVAULT_NAME=envship-kv \
#     ENGINE=acr bash deploy/azure/setup.sh
#
# ENGINE is the chart's engine.mode: acr (every build an ACR Tasks run: no Docker engine in the
# cluster; recommended on AKS) or dind (the default: a docker:dind sidecar; for a remote engine
# too, which just does not use the imported image). With ENGINE=acr, ACR_TASKS_ROLE chooses the
# role that may schedule runs on the registry:
#   custom  (the default) deploy/azure/acr-tasks-role.json, created in the registry's resource
#           group as ACR_TASKS_ROLE_NAME ("envship ACR Tasks runs"): only the run operations
#           envship calls;
#   builtin "Container Registry Tasks Contributor": no role definition to create, but more than
#           envship needs (it also manages tasks, task runs and agent pools).
#
# Optional settings: IDENTITY_NAME (envship), NAMESPACE (envship), SERVICE_ACCOUNT (envship: the
# chart's service account is the release's full name, so "envship" for a release named envship),
# DIND_IMAGE (docker:28-dind), ENABLE_CSI=1 (Secrets Store CSI driver add-on with rotation),
# ENABLE_APP_ROUTING=1 (managed NGINX ingress for the webhooks).
set -euo pipefail

: "${RESOURCE_GROUP:?set RESOURCE_GROUP: the resource group of the cluster and the identity}"
: "${AKS_NAME:?set AKS_NAME: the AKS cluster}"
: "${ACR_NAME:?set ACR_NAME: the container registry (its name, not its login server)}"
: "${KEYVAULT_NAME:?set KEYVAULT_NAME: the key vault that holds the secrets envship reads}"
ENGINE=${ENGINE:-dind}
ACR_TASKS_ROLE=${ACR_TASKS_ROLE:-custom}
ACR_TASKS_ROLE_NAME=${ACR_TASKS_ROLE_NAME:-envship ACR Tasks runs}
IDENTITY_NAME=${IDENTITY_NAME:-envship}
NAMESPACE=${NAMESPACE:-envship}
SERVICE_ACCOUNT=${SERVICE_ACCOUNT:-envship}
DIND_IMAGE=${DIND_IMAGE:-docker:28-dind}
ENABLE_CSI=${ENABLE_CSI:-0}
ENABLE_APP_ROUTING=${ENABLE_APP_ROUTING:-0}

case "$ENGINE" in
    acr | dind) ;;
    *) echo "ENGINE must be acr or dind, not '$ENGINE'" >&2; exit 2 ;;
esac
case "$ACR_TASKS_ROLE" in
    custom | builtin) ;;
    *) echo "ACR_TASKS_ROLE must be custom or builtin, not '$ACR_TASKS_ROLE'" >&2; exit 2 ;;
esac
SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

step() { printf '\n==> %s\n' "$*"; }

step "1. OIDC issuer and workload identity on cluster $AKS_NAME"
# Both are needed: the issuer signs the service account tokens that Entra ID trusts, and the
# workload identity webhook puts AZURE_CLIENT_ID, AZURE_TENANT_ID and the token file into pods
# labelled azure.workload.identity/use=true.
az aks update --resource-group "$RESOURCE_GROUP" --name "$AKS_NAME" \
    --enable-oidc-issuer --enable-workload-identity --output none
OIDC_ISSUER=$(az aks show --resource-group "$RESOURCE_GROUP" --name "$AKS_NAME" \
    --query oidcIssuerProfile.issuerUrl --output tsv)
echo "issuer: $OIDC_ISSUER"

step "2. Managed identity $IDENTITY_NAME"
az identity create --resource-group "$RESOURCE_GROUP" --name "$IDENTITY_NAME" --output none
CLIENT_ID=$(az identity show --resource-group "$RESOURCE_GROUP" --name "$IDENTITY_NAME" \
    --query clientId --output tsv)
PRINCIPAL_ID=$(az identity show --resource-group "$RESOURCE_GROUP" --name "$IDENTITY_NAME" \
    --query principalId --output tsv)
TENANT_ID=$(az identity show --resource-group "$RESOURCE_GROUP" --name "$IDENTITY_NAME" \
    --query tenantId --output tsv)

step "3. Federated credential for system:serviceaccount:$NAMESPACE:$SERVICE_ACCOUNT"
# Only pods running as this service account, in this namespace, of this cluster, can sign in
# as the identity.
az identity federated-credential create \
    --name "${AKS_NAME}-${NAMESPACE}-${SERVICE_ACCOUNT}" \
    --identity-name "$IDENTITY_NAME" \
    --resource-group "$RESOURCE_GROUP" \
    --issuer "$OIDC_ISSUER" \
    --subject "system:serviceaccount:${NAMESPACE}:${SERVICE_ACCOUNT}" \
    --audience api://AzureADTokenExchange \
    --output none

step "4. Role assignments"
ACR_ID=$(az acr show --name "$ACR_NAME" --query id --output tsv)
KEYVAULT_ID=$(az keyvault show --name "$KEYVAULT_NAME" --query id --output tsv)
# The registry's own subscription and resource group (config.builds.acr): they may differ from
# the cluster's. ACR_ID is /subscriptions/SUB/resourceGroups/RG/providers/....
ACR_SUBSCRIPTION=$(cut -d/ -f3 <<<"$ACR_ID")
ACR_RESOURCE_GROUP=$(cut -d/ -f5 <<<"$ACR_ID")
# AcrPush: pull base images, check tags and labels, push the built images (config
# registry.acrIdentity: true); with ENGINE=acr, verify the digest each run reports and move
# tags. Scoped to this registry only.
az role assignment create --assignee-object-id "$PRINCIPAL_ID" \
    --assignee-principal-type ServicePrincipal \
    --role AcrPush --scope "$ACR_ID" --output none
# Key Vault Secrets User: read secret values (keyvault:// references, and the CSI driver's
# mounts). Needs a vault with Azure RBAC authorization; with access policies, grant "get" on
# secrets instead.
if [ "$(az keyvault show --name "$KEYVAULT_NAME" \
        --query properties.enableRbacAuthorization --output tsv)" != "true" ]; then
    echo "warning: $KEYVAULT_NAME uses access policies, not Azure RBAC: the role below has no" \
        "effect there; give the identity 'get' on secrets with az keyvault set-policy" >&2
fi
az role assignment create --assignee-object-id "$PRINCIPAL_ID" \
    --assignee-principal-type ServicePrincipal \
    --role "Key Vault Secrets User" --scope "$KEYVAULT_ID" --output none

TASKS_ROLE=""
if [ "$ENGINE" = "acr" ]; then
    # ACR Tasks runs: upload the build context, schedule a run, read its status and log, cancel
    # it (on shutdown). Scoped to this registry only.
    if [ "$ACR_TASKS_ROLE" = "custom" ]; then
        ROLE_SCOPE="/subscriptions/${ACR_SUBSCRIPTION}/resourceGroups/${ACR_RESOURCE_GROUP}"
        EXISTING=$(az role definition list --custom-role-only true --name "$ACR_TASKS_ROLE_NAME" \
            --query "[0].assignableScopes" --output tsv)
        if [ -z "$EXISTING" ]; then
            ROLE_FILE=$(mktemp)
            trap 'rm -f "$ROLE_FILE"' EXIT
            sed -e "s|\"envship ACR Tasks runs\"|\"${ACR_TASKS_ROLE_NAME}\"|" \
                -e "s|/subscriptions/SUBSCRIPTION_ID/resourceGroups/RESOURCE_GROUP|${ROLE_SCOPE}|" \
                "$SCRIPT_DIR/acr-tasks-role.json" >"$ROLE_FILE"
            az role definition create --role-definition "@$ROLE_FILE" --output none
        elif ! grep -qixF "$ROLE_SCOPE" <<<"$EXISTING"; then
            # Another installation's role, assignable elsewhere: changing its scopes is the
            # owner's decision, not this script's.
            echo "error: the custom role '$ACR_TASKS_ROLE_NAME' exists but is not assignable in" \
                "$ROLE_SCOPE: add that scope to its assignableScopes, or choose another name" \
                "with ACR_TASKS_ROLE_NAME" >&2
            exit 1
        fi
        TASKS_ROLE=$ACR_TASKS_ROLE_NAME
    else
        TASKS_ROLE="Container Registry Tasks Contributor"
    fi
    # A role definition just created takes a while to reach role assignments: up to 2 minutes.
    for attempt in $(seq 1 12); do
        if az role assignment create --assignee-object-id "$PRINCIPAL_ID" \
            --assignee-principal-type ServicePrincipal \
            --role "$TASKS_ROLE" --scope "$ACR_ID" --output none; then
            break
        fi
        if [ "$attempt" = 12 ]; then
            echo "error: could not assign '$TASKS_ROLE' on $ACR_NAME" >&2
            exit 1
        fi
        echo "'$TASKS_ROLE' is not assignable yet; trying again in 10 s" >&2
        sleep 10
    done
fi

step "5. Image pulls from $ACR_NAME"
# The kubelet's identity gets AcrPull, so the cluster can pull the envship image (and the
# mirrored docker:dind) without an imagePullSecret.
az aks update --resource-group "$RESOURCE_GROUP" --name "$AKS_NAME" \
    --attach-acr "$ACR_ID" --output none
if [ "$ENGINE" = "dind" ]; then
    # docker:dind from Docker Hub, copied into the registry once: no Docker Hub pull limits at
    # pod start. The chart's engine.dind.image then points at ACR_NAME.azurecr.io/mirror/docker.
    az acr import --name "$ACR_NAME" --source "docker.io/library/${DIND_IMAGE}" \
        --image "mirror/${DIND_IMAGE}" --force --output none
fi

if [ "$ENABLE_CSI" = "1" ]; then
    step "6a. Secrets Store CSI driver (Azure Key Vault provider) with rotation"
    az aks enable-addons --resource-group "$RESOURCE_GROUP" --name "$AKS_NAME" \
        --addons azure-keyvault-secrets-provider --enable-secret-rotation --output none
fi

if [ "$ENABLE_APP_ROUTING" = "1" ]; then
    step "6b. Application routing (managed NGINX ingress class webapprouting.kubernetes.azure.com)"
    az aks approuting enable --resource-group "$RESOURCE_GROUP" --name "$AKS_NAME" --output none
fi

LOGIN_SERVER=$(az acr show --name "$ACR_NAME" --query loginServer --output tsv)
step "Done. Role assignments can take a few minutes to apply. Chart values:"
cat <<EOF
  image.repository:                  ${LOGIN_SERVER}/envship
  config.registry.url:               ${LOGIN_SERVER}/<prefix>
  azureWorkloadIdentity.clientId:    ${CLIENT_ID}
  azureWorkloadIdentity.tenantId:    ${TENANT_ID}
  keyvault references:               keyvault://${KEYVAULT_NAME}/<secret name>
EOF
if [ "$ENGINE" = "acr" ]; then
    cat <<EOF
  engine.mode:                       acr
  config.builds.engine:              acr
  config.builds.acr.subscription:    ${ACR_SUBSCRIPTION}
  config.builds.acr.resourceGroup:   ${ACR_RESOURCE_GROUP}
  config.builds.acr.registry:        ${ACR_NAME} (the default for ${LOGIN_SERVER})
  the identity's roles on ${ACR_NAME}: AcrPush, ${TASKS_ROLE}

  helm install envship ./helm/envship -n ${NAMESPACE} --create-namespace \\
    -f deploy/azure/values-aks-acr.yaml \\
    --set-string config.builds.acr.subscription=${ACR_SUBSCRIPTION} \\
    --set config.builds.acr.resourceGroup=${ACR_RESOURCE_GROUP} \\
    --set azureWorkloadIdentity.clientId=${CLIENT_ID} \\
    --set azureWorkloadIdentity.tenantId=${TENANT_ID}
EOF
else
    cat <<EOF
  engine.dind.image.repository:      ${LOGIN_SERVER}/mirror/docker

  helm install envship ./helm/envship -n ${NAMESPACE} --create-namespace \\
    -f deploy/azure/values-aks.yaml \\
    --set azureWorkloadIdentity.clientId=${CLIENT_ID} \\
    --set azureWorkloadIdentity.tenantId=${TENANT_ID}
EOF
fi
