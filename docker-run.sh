#!/bin/sh
# Container start, the mautrix bridges' convention: the first start writes an example
# config and stops; the next writes the registration and stops; then the bridge runs.
set -e
cd /data
if [ ! -f config.yaml ]; then
  cp /opt/daarion-bridge/daarion_bridge/config/example.yaml config.yaml
  chmod 600 config.yaml
  echo "No config found: wrote an example to /data/config.yaml."
  echo "Edit it (homeserver.address, homeserver.domain, appservice.address, database.url),"
  echo "then start the container again to generate the registration."
  exit 0
fi
if [ ! -f registration.yaml ]; then
  daarion-bridge -g -c config.yaml -r registration.yaml
  echo "Add /data/registration.yaml to app_service_config_files in homeserver.yaml,"
  echo "restart Synapse, then start this container again."
  exit 0
fi
exec daarion-bridge -c config.yaml -r registration.yaml "$@"
