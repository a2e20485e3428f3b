#!/bin/sh
# The base image's digest in deploy/Dockerfile against the registry's: prints the tag's current
# index digest (all platforms) and whether the Dockerfile has it; with --update, writes it in.
# Needs Docker with buildx and access to Docker Hub. To move to a newer Python patch release,
# edit the tag in the FROM line first, then run this with --update.
set -eu
cd "$(dirname "$0")"
from=$(grep -m1 '^FROM ' Dockerfile | cut -d' ' -f2)
tag=${from%@*}
pinned=${from#*@}
current=$(docker buildx imagetools inspect "$tag" --format '{{json .Manifest}}' \
  | python3 -c 'import json, sys; print(json.load(sys.stdin)["digest"])')
echo "$tag: registry $current, Dockerfile $pinned"
if [ "$current" = "$pinned" ]; then
  echo "up to date"
elif [ "${1:-}" = "--update" ]; then
  sed -i "s|^FROM $tag@sha256:[0-9a-f]*|FROM $tag@$current|" Dockerfile
  echo "Dockerfile updated: rebuild, run tests/deploy, commit"
else
  echo "the tag moved (a rebuild of the same Python release, e.g. Debian fixes): rerun with --update" >&2
  exit 1
fi
