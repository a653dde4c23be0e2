#!/bin/bash
# hutch provisioning step (as: user): an AI coding CLI from the npm registry, chosen by the
# step's name, installed with `npm install -g` under the user's own prefix (nvm's directory
# when Node.js came from nvm, else ~/.local, set by the node step):
#   step name     package                     command   version setting (default latest)
#   claude-code   @anthropic-ai/claude-code   claude    HUTCH_CLAUDE_CODE_VERSION
#   gemini-cli    @google/gemini-cli          gemini    HUTCH_GEMINI_CLI_VERSION
#   codex-cli     @openai/codex               codex     HUTCH_CODEX_VERSION
# The name comes from the step file the seed writes, /var/lib/hutch/steps/NN-NAME.sh (or
# HUTCH_NPM_CLI when set). Nothing is logged in: run the command in the VM and sign in there
# (docs/ai-tools.md).
# Installed once; running again leaves a working install alone. When the package does not
# run on this VM's Node.js, it is uninstalled again and the step fails saying which Node.js
# the package wants.
set -u
step=$(basename "$0" .sh)
NAME=${HUTCH_NPM_CLI:-${step#*-}}
case "$NAME" in
  claude-code) PKG=@anthropic-ai/claude-code BIN=claude VERSION_SETTING=HUTCH_CLAUDE_CODE_VERSION ;;
  gemini-cli) PKG=@google/gemini-cli BIN=gemini VERSION_SETTING=HUTCH_GEMINI_CLI_VERSION ;;
  codex-cli) PKG=@openai/codex BIN=codex VERSION_SETTING=HUTCH_CODEX_VERSION ;;
  *)
    printf 'hutch-npm-cli: error: no CLI is known by the step name %s (claude-code, gemini-cli or codex-cli)\n' "$NAME" >&2
    exit 1
    ;;
esac
log() { printf 'hutch-%s: %s\n' "$NAME" "$*"; }
die() { printf 'hutch-%s: error: %s\n' "$NAME" "$*" >&2; exit 1; }
# shellcheck source=/dev/null
[ -r /etc/profile.d/hutch-env.sh ] && . /etc/profile.d/hutch-env.sh
# NODE_EXTRA_CA_CERTS, when the profile adds certificate authorities (ca-certs.sh).
# shellcheck source=/dev/null
[ -r /etc/profile.d/hutch-ca.sh ] && . /etc/profile.d/hutch-ca.sh
[ "$(id -u)" != 0 ] || die "run this step as the guest user (as: user), not root"
spec=$PKG@${!VERSION_SETTING:-latest}

export NVM_DIR=$HOME/.nvm
if [ -s "$NVM_DIR/nvm.sh" ]; then
  # nvm's functions are not written for set -u.
  set +u
  # shellcheck source=/dev/null
  . "$NVM_DIR/nvm.sh" && nvm use default >/dev/null 2>&1
  set -u
fi
command -v npm >/dev/null 2>&1 ||
  die "npm is not installed: the node step failed or did not run (see its log in /var/log/hutch/steps/)"
prefix=$(npm config get prefix) || die "npm config get prefix failed"
case "$prefix" in
  "$HOME"/*) ;;
  *)
    # Never a root-owned global install: the node step sets this, but do not depend on it.
    npm config set prefix "$HOME/.local" || die "npm config set prefix failed"
    prefix=$HOME/.local
    ;;
esac
export PATH=$prefix/bin:$PATH
node_version=$(node --version 2>/dev/null)

# node_too_old WANTS: this Node.js is older than WANTS (a package's engines.node) asks for.
# Only a ">=N" is understood: anything else is not blamed on Node.js.
node_too_old() {
  local need have
  need=$(printf '%s\n' "$1" | sed -n 's/^>= *v\{0,1\}\([0-9][0-9]*\).*/\1/p')
  have=$(node -p 'process.versions.node.split(".")[0]' 2>/dev/null)
  [ -n "$need" ] && [ -n "$have" ] && [ "$have" -lt "$need" ]
}

if [ -e "$prefix/lib/node_modules/$PKG/package.json" ] && out=$(timeout 300 "$BIN" --version 2>&1 </dev/null); then
  log "$PKG is already installed: $BIN --version: $out"
  exit 0
fi

log "npm install -g $spec (prefix $prefix, Node.js $node_version)"
npm_log=$(mktemp) || die "mktemp failed"
trap 'rm -f "$npm_log"' EXIT
set -o pipefail
if ! npm install -g --no-fund --no-audit --no-update-notifier --fetch-timeout=60000 \
  --fetch-retries=2 "$spec" 2>&1 | tee "$npm_log"; then
  code=$(grep -m 1 -E '^npm (ERR!|error) code ' "$npm_log" | awk '{ print $NF }')
  wants=$(npm view "$spec" engines.node 2>/dev/null)
  if node_too_old "$wants"; then
    die "$spec does not install on Node.js $node_version${code:+ ($code)}: it needs Node.js $wants. Install a newer Node.js (nvm) and run this step again"
  fi
  die "npm install -g $spec failed${code:+ ($code)} on Node.js $node_version; see npm's messages above"
fi

out=$(timeout 300 "$BIN" --version 2>&1 </dev/null)
status=$?
if [ $status = 0 ]; then
  log "installed: $BIN --version: $out"
  exit 0
fi
wants=$(node -p "(require('$prefix/lib/node_modules/$PKG/package.json').engines || {}).node || ''" 2>/dev/null)
version=$(node -p "require('$prefix/lib/node_modules/$PKG/package.json').version" 2>/dev/null)
printf '%s\n' "$out" | tail -n 5 | sed "s/^/hutch-$NAME: $BIN: /"
npm uninstall -g --no-fund --no-audit "$PKG" >/dev/null 2>&1
# Blame Node.js only when it is older than the package asks for; else say what happened.
if node_too_old "$wants"; then
  die "$PKG $version does not run on Node.js $node_version (it needs Node.js $wants); uninstalled. Install a newer Node.js (nvm) and run this step again"
fi
case $status in
  124) why="did not answer within 300 s" ;;
  132) why="was killed by SIGILL: this VM's CPU model lacks instructions it uses (under TCG QEMU's default model, qemu64, has no AVX)" ;;
  *) why="exited with status $status" ;;
esac
die "$PKG $version: $BIN --version $why; uninstalled"
