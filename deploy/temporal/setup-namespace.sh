#!/bin/sh
# One-shot (docker-compose.yml's temporal-namespace service; or by hand against any cluster,
# e.g. in the Helm chart's admintools pod): wait for the Temporal server, create the namespace
# MintSaga uses, and register the search attributes it sets (MintStage, MintStatus). Safe to
# run again: whatever exists already is left as it is.
#
#   TEMPORAL_ADDRESS=temporal:7233 TEMPORAL_NAMESPACE=default sh setup-namespace.sh
set -eu
ADDRESS="${TEMPORAL_ADDRESS:-temporal:7233}"
NAMESPACE="${TEMPORAL_NAMESPACE:-default}"
RETENTION="${TEMPORAL_RETENTION:-168h}"  # how long closed mints' histories are kept
ATTRIBUTES="MintStage MintStatus MintCollection"  # Keyword search attributes (workflows/saga.py)

tries=0
until temporal operator cluster health --address "$ADDRESS" >/dev/null 2>&1; do
    tries=$((tries + 1))
    [ "$tries" -lt 60 ] || { echo "Temporal at $ADDRESS is not healthy"; exit 1; }
    sleep 5
done

if temporal operator namespace describe --address "$ADDRESS" -n "$NAMESPACE" >/dev/null 2>&1; then
    echo "namespace $NAMESPACE: exists"
else
    temporal operator namespace create --address "$ADDRESS" -n "$NAMESPACE" \
        --retention "$RETENTION"
    echo "namespace $NAMESPACE: created"
fi

# A new namespace takes a moment to reach every frontend's cache.
tries=0
until known="$(temporal operator search-attribute list --address "$ADDRESS" -n "$NAMESPACE" 2>&1)"
do
    tries=$((tries + 1))
    [ "$tries" -lt 30 ] || { echo "$known"; exit 1; }
    sleep 2
done
for attribute in $ATTRIBUTES; do
    if printf '%s\n' "$known" | grep -qw "$attribute"; then
        echo "search attribute $attribute: exists"
    else
        temporal operator search-attribute create --address "$ADDRESS" -n "$NAMESPACE" \
            --name "$attribute" --type Keyword
        echo "search attribute $attribute: created"
    fi
done
