#!/bin/bash
# Hydra "ssh" launcher stand-in: start the proxy for HOST in a new UTS namespace whose
# hostname is HOST, so that one machine hosts several "nodes" with real, distinct
# hostnames (mpiexec -f hostfile -launcher ssh -launcher-exec THIS).  Needs root.
while [ "${1#-}" != "$1" ]; do shift; done  # ssh options Hydra passes (-x)
host="$1"
shift
exec unshare --uts /bin/sh -c 'hostname "$0" && exec /bin/sh -c "$*"' "$host" "$@"
