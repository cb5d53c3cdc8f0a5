#!/bin/sh
# `serve SERVICE`: the service's HTTP app on its own port (8001-8005), with
# whichever roles its environment turns on (<SERVICE>_RUN_RELAY,
# <SERVICE>_RUN_CONSUMERS, ...). Anything else is a `kent-together` command.
set -eu
if [ "${1:-}" = "serve" ]; then
    service="${2:?usage: serve SERVICE}"
    port="$(python -c 'import sys; from suite.registry import spec; print(spec(sys.argv[1]).port)' "$service")"
    echo "$port" > /tmp/kt-port
    # SIGTERM: uvicorn stops taking connections, finishes the requests in flight
    # (up to 20 s), then the lifespan stops the relay and consumers (shared/app.py).
    # No proxy headers here: the services believe X-Forwarded-For only from the
    # proxies KT_TRUSTED_PROXIES names (shared/security.py), never from any client.
    exec python -m uvicorn "services.${service}.app:create_app" --factory \
        --host 0.0.0.0 --port "$port" --no-access-log \
        --no-proxy-headers --timeout-graceful-shutdown 20
fi
exec kent-together "$@"
