"""gunicorn settings for the feed service; the bind address comes from the command line, from the repo root:

gunicorn --config backend/gunicorn.conf.py --bind 127.0.0.1:4567 'backend:create_app()'
"""

from __future__ import annotations

from identity_headers import MAX_VALUE_BYTES

workers = 2
# threads > 1 runs the gthread worker: the views are I/O-light, so threads are cheaper than more processes.
threads = 4
# How long an idle keep-alive connection stays open. Envoy reuses its connections to us; gunicorn's default of
# 2 s closed them under Envoy's feet, and a request Envoy sent in that moment came back as its 503 "upstream
# connect error ... connection termination". Envoy closes idle connections after BACKEND_IDLE_TIMEOUT (30 s,
# envoy/bootstrap.py); this must stay longer, so Envoy is always the side that closes.
keepalive = 75

accesslog = "-"
# Paths are logged cut before any ?, ; or #, and withheld when shaped like a JWT (backend/access_log.py).
logger_class = "backend.access_log.AccessLogger"
# Request line without the query string and without %(u)s (a Basic Authorization user) or any {authorization}i:
# a credential, in a header or a query parameter, must never reach the log. Envoy's x-request-id ties a line
# to the proxy's own log.
access_log_format = '%(h)s %(t)s "%(m)s %(U)s %(H)s" %(s)s %(b)s %(M)sms "%(a)s" %({x-request-id}i)s'

# The longest header line gunicorn reads: an identity header with the longest value authz sets (the largest group
# list Cognito can give a user), its name and the separator. gunicorn's default (8190) answered a valid identity
# with 64 long group names with its own 431 HTML page, before the app ran. 1 KiB is room for any sane prefix; Envoy
# bounds the request's headers as a whole (max_request_headers_kb in envoy/bootstrap.py).
limit_request_field_size = MAX_VALUE_BYTES + 1024

# gunicorn's default, stated so that changing it is a visible edit: a header whose name has an underscore is
# dropped. Otherwise a client's `x_user_sub: evil` would become HTTP_X_USER_SUB, the same environ key as the
# identity header Envoy sets. Envoy rejects such headers first (headers_with_underscores_action); this is the
# second line.
header_map = "drop"
# forwarded_allow_ips stays at its default (loopback only), and no underscore header is trusted even from
# there: we are not mounted under a prefix, so a `script_name` or `path_info` header has no business moving
# Flask's routing.
forwarder_headers = ""
# gunicorn's runtime control socket defaults to one path per user ($XDG_RUNTIME_DIR or ~/.gunicorn), which a
# second instance (the tests' beside the stack's) would take over; nothing here uses it.
control_socket_disable = True
