# A script step without an interpreter line: the seed gives it #!/bin/bash.
set -e
echo "node step as $(id -un) in ${HOME:-?}"
if [ -n "${HUTCH_TEST_OUT:-}" ]; then
  echo node >>"$HUTCH_TEST_OUT"
fi
