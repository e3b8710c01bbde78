#!/bin/sh
# azd postdeploy hook: creates cmk-guard's Event Grid event subscriptions (infra/events.bicep)
# now that the functions exist; an AzureFunction destination is validated against the function.
# Its parameters are main.bicep's outputs, which azd keeps in the environment. Needs the Azure
# CLI, signed in to the same tenant (`az login`). Run it again with `azd hooks run postdeploy`.
set -eu
cd "$(dirname "$0")/../.."

if ! command -v az >/dev/null 2>&1; then
  echo "postdeploy: the Azure CLI (az) creates the event subscriptions; install it, az login, then: azd hooks run postdeploy" >&2
  exit 1
fi

params=$(mktemp)
trap 'rm -f "$params"' EXIT
python3 - "$params" <<'PY'
import json
import os
import re
import sys


def need(name):
    value = os.environ.get(name, "").strip()
    if not value:
        sys.exit(f"postdeploy: {name} is not in the azd environment; run `azd provision` first")
    return value


# ARM resource-group names: 1-90 letters, digits, underscores, hyphens, periods and
# parentheses, not ending in a period. Checked here because Bicep has no pattern match, and a
# name with a slash would widen the subject filter to other resources.
RESOURCE_GROUP_NAME = re.compile(r"[\w\-.()]{0,89}[\w\-()]")


def resource_group_names(name):
    text = os.environ.get(name, "").strip() or "[]"
    try:
        names = json.loads(text)
    except ValueError as error:
        sys.exit(f"postdeploy: {name} is not a JSON array of resource-group names: {error}")
    if not isinstance(names, list):
        sys.exit(f"postdeploy: {name} is not a JSON array of resource-group names")
    for group in names:
        if not isinstance(group, str) or not RESOURCE_GROUP_NAME.fullmatch(group.strip()):
            sys.exit(
                f"postdeploy: {name}: {group!r} is not a resource-group name (1-90 letters, digits, "
                "_ - . ( ), not ending in a period); fix managedResourceGroups in "
                "infra/main.parameters.json and run azd provision"
            )
    return names


parameters = {
    "functionAppId": need("CMK_GUARD_FUNCTION_APP_ID"),
    "deadLetterStorageId": need("CMK_GUARD_DEAD_LETTER_STORAGE_ID"),
    "deadLetterContainer": need("CMK_GUARD_DEAD_LETTER_CONTAINER"),
    "subscriptionTopics": json.loads(need("CMK_GUARD_SUBSCRIPTION_TOPICS")),
    # Absent when the environment was provisioned before the parameter existed: none.
    "managedResourceGroups": resource_group_names("CMK_GUARD_MANAGED_RESOURCE_GROUPS"),
}
with open(sys.argv[1], "w") as f:
    json.dump({
        "$schema": "https://schema.management.azure.com/schemas/2019-04-01/deploymentParameters.json#",
        "contentVersion": "1.0.0.0",
        "parameters": {name: {"value": value} for name, value in parameters.items()},
    }, f)
PY

: "${AZURE_SUBSCRIPTION_ID:?postdeploy: AZURE_SUBSCRIPTION_ID is not in the azd environment}"
: "${AZURE_LOCATION:?postdeploy: AZURE_LOCATION is not in the azd environment}"
: "${AZURE_ENV_NAME:?postdeploy: AZURE_ENV_NAME is not in the azd environment}"

# Right after a deployment the host may still be indexing its functions, and Event Grid then
# refuses the destination; try a few times before giving up.
attempt=1
while :; do
  if az deployment sub create \
      --name "cmkguard-events-$AZURE_ENV_NAME" \
      --subscription "$AZURE_SUBSCRIPTION_ID" \
      --location "$AZURE_LOCATION" \
      --template-file infra/events.bicep \
      --parameters "@$params" \
      --output none; then
    echo "postdeploy: Event Grid event subscriptions are in place"
    exit 0
  fi
  if [ "$attempt" -ge 5 ]; then
    echo "postdeploy: the event subscriptions could not be created; see docs/deploy.md (Troubleshooting)" >&2
    exit 1
  fi
  attempt=$((attempt + 1))
  echo "postdeploy: retrying in 30 s (attempt $attempt of 5)" >&2
  sleep 30
done
