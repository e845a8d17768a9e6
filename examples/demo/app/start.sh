#!/bin/sh
# Start-up of the demo app: migrate the data volume when the version changes (like AnythingLLM's
# migrations on start; a restart of the same version changes nothing), then serve /health and /version.
mkdir -p /data /www
echo "$APP_VERSION" > /www/version
echo ok > /www/health
if [ "$(cat /data/schema-version 2>/dev/null)" != "$APP_VERSION" ]; then
    echo "migrated to $APP_VERSION" >> /data/migrations.log
    echo "$APP_VERSION" > /data/schema-version
fi
if [ "$APP_BROKEN" = 1 ]; then
    # A bad migration: rewrites one file, deletes another, creates a third, then dies.
    echo "rewritten by $APP_VERSION" > /data/notes.txt
    rm -f /data/important.txt
    echo "left behind by $APP_VERSION" > /data/created-by-broken.txt
    echo "migration failed" >&2
    exit 1
fi
# As PID 1, httpd would ignore SIGTERM: run it as a child and stop it on TERM, so `docker stop` is quick.
httpd -f -p 8080 -h /www &
trap 'kill $!; exit 0' TERM INT
wait $!
