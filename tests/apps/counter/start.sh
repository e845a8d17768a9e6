#!/bin/sh
# The request-counting app of the progressive-delivery tests (tests/test_fleet_canary.py).
# GET /cgi-bin/hello answers 200, or 500 once APP_BAD_AFTER seconds have passed since the start
# (unset: never); each answer is counted by its code (a byte appended per request: appends do
# not race), and GET /cgi-bin/metrics exports them as http_requests_total{code,version}.
# As a relay (a plain container on the overlay network with a port on the host's loopback), GET
# /cgi-bin/scrape?target=IP:PORT answers a task's metrics for the Prometheus on the host.
mkdir -p /www/cgi-bin /tmp/count
: > /tmp/count/200; : > /tmp/count/500
date +%s > /tmp/started
cat > /www/cgi-bin/hello <<'CGI'
#!/bin/sh
code=200
if [ -n "$APP_BAD_AFTER" ] && [ $(( $(date +%s) - $(cat /tmp/started) )) -ge "$APP_BAD_AFTER" ]; then code=500; fi
printf x >> /tmp/count/$code
if [ $code = 200 ]; then printf 'Content-Type: text/plain\r\n\r\nhello %s\n' "$APP_VERSION"
else printf 'Status: 500 Internal Server Error\r\nContent-Type: text/plain\r\n\r\nbroken\n'; fi
CGI
cat > /www/cgi-bin/metrics <<'CGI'
#!/bin/sh
printf 'Content-Type: text/plain\r\n\r\n# TYPE http_requests_total counter\n'
for c in 200 500; do echo "http_requests_total{code=\"$c\",version=\"$APP_VERSION\"} $(( $(wc -c < /tmp/count/$c) ))"; done
CGI
cat > /www/cgi-bin/scrape <<'CGI'
#!/bin/sh
printf 'Content-Type: text/plain\r\n\r\n'
t=$(echo "${QUERY_STRING#target=}" | sed 's/%3[Aa]/:/')  # Prometheus encodes the colon
printf 'GET /cgi-bin/metrics HTTP/1.0\r\n\r\n' | nc -w 1 "${t%:*}" "${t##*:}" | sed '1,/^\r*$/d'
CGI
chmod +x /www/cgi-bin/*
httpd -f -p 8080 -h /www &
trap 'kill $!; exit 0' TERM INT
wait $!
