#!/usr/bin/env bash
# Regenerate the sample reports in reports/ from the bundled demo model, with the tool itself:
#   bash reports/regenerate.sh
# Exit status 1 from `doctor examine` means "findings at or above --fail-on", which is a finished report.
set -u
cd "$(dirname "$0")/.."
for suite in quick standard; do
  rm -rf "reports/$suite"
  doctor examine --suite "$suite" --out "reports/$suite"
  status=$?
  if [ "$status" -gt 1 ]; then
    echo "doctor examine --suite $suite failed with exit $status" >&2
    exit "$status"
  fi
done
