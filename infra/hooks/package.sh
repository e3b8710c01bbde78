#!/bin/sh
# azd prepackage hook: builds the deployable app with scripts/package (dist/app,
# dist/cmk-guard.zip, SHA256SUMS and the SBOM). When the azd environment names a policy file
# (CMK_GUARD_POLICY), scripts/package --policy has the freshly built binary check it and ships
# it as policy.toml inside the checksummed zip, which main.bicep then sets as
# CMKGUARD_POLICY_FILE.
set -eu
cd "$(dirname "$0")/../.."

policy="${CMK_GUARD_POLICY:-}"
if [ -n "$policy" ] && [ ! -f "$policy" ]; then
  echo "package: CMK_GUARD_POLICY=$policy is not a file (paths are relative to the repository root)" >&2
  exit 1
fi
if [ -n "$policy" ]; then
  scripts/package --policy "$policy"
else
  scripts/package
fi
