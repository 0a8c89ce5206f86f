#!/bin/sh
# Installs the official MCP TypeScript SDK from the npm registry into
# BUILD/mcp-node (once; node_modules never enters the repository) and copies
# the test client next to it, so that its imports resolve there.
#   tests/mcp/setup.sh BUILD
# Exit status 0: ready; 2: cannot (a "SKIP: ..." line says why); 1: broken.
set -u
SDK_VERSION=1.17.5 # speaks 2025-06-18; works with node >= 18
build=${1:?usage: setup.sh BUILD}
here=$(cd "$(dirname "$0")" && pwd)
dir=$build/mcp-node
if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
	echo "SKIP: node/npm not installed (packaging/install-deps.sh)"
	exit 2
fi
mkdir -p "$dir" || exit 1
cp "$here"/client.mjs "$here"/bench.mjs "$dir"/ || exit 1
pkg=$dir/node_modules/@modelcontextprotocol/sdk/package.json
if [ -f "$pkg" ] && grep -q "\"version\": \"$SDK_VERSION\"" "$pkg"; then
	exit 0
fi
[ -f "$dir/package.json" ] ||
	printf '{"name": "boxlite-mcp-tests", "private": true, "type": "module"}\n' >"$dir/package.json"
if ! (cd "$dir" && timeout 600 npm install --no-audit --no-fund --loglevel=error \
	"@modelcontextprotocol/sdk@$SDK_VERSION") >"$dir/npm.log" 2>&1; then
	if grep -qiE 'ENOTFOUND|EAI_AGAIN|ECONNREFUSED|ETIMEDOUT|ECONNRESET|network|proxy' "$dir/npm.log"; then
		echo "SKIP: the npm registry is unreachable ($(grep -m1 -iE 'err' "$dir/npm.log" | cut -c1-120))"
		exit 2
	fi
	cat "$dir/npm.log"
	exit 1
fi
exit 0
