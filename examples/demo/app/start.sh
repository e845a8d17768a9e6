#!/bin/sh
# Start-up of the demo app: "migrate" the data volume, then serve /health and /version.
mkdir -p /data /www
echo "$APP_VERSION" > /www/version
echo ok > /www/health
echo "started $APP_VERSION" >> /data/migrations.log
if [ "$APP_BROKEN" = 1 ]; then
    # A bad migration: rewrites one file, deletes another, creates a third, then dies.
    echo "rewritten by $APP_VERSION" > /data/notes.txt
    rm -f /data/important.txt
    echo "left behind by $APP_VERSION" > /data/created-by-broken.txt
    echo "migration failed" >&2
    exit 1
fi
exec httpd -f -p 8080 -h /www
