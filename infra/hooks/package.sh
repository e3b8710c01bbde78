#!/bin/sh
# azd prepackage hook: builds the deployable app with scripts/package (dist/app and
# dist/cmk-guard.zip). When the azd environment names a policy file (CMK_GUARD_POLICY), the
# freshly built binary checks it, and it travels in the package as policy.toml, which
# main.bicep then sets as CMKGUARD_POLICY_FILE.
set -eu
cd "$(dirname "$0")/../.."

scripts/package

policy="${CMK_GUARD_POLICY:-}"
if [ -n "$policy" ]; then
  if [ ! -f "$policy" ]; then
    echo "package: CMK_GUARD_POLICY=$policy is not a file (paths are relative to the repository root)" >&2
    exit 1
  fi
  dist/app/cmk-guard policy check "$policy"
  cp "$policy" dist/app/policy.toml
  python3 - dist/cmk-guard.zip dist/app/policy.toml <<'PY'
import sys
import zipfile

archive, policy = sys.argv[1], sys.argv[2]
with zipfile.ZipFile(archive, "a", zipfile.ZIP_DEFLATED) as z:
    if "policy.toml" in z.namelist():
        sys.exit(f"package: {archive} already holds policy.toml")
    info = zipfile.ZipInfo.from_file(policy, "policy.toml")
    info.compress_type = zipfile.ZIP_DEFLATED
    with open(policy, "rb") as f:
        z.writestr(info, f.read())
PY
  echo "package: $policy added as policy.toml"
fi
