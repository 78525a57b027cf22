# shellcheck shell=bash
# ensure_rabbitmq: a RabbitMQ with its management API for the tests, exported as SKUFLOW_TEST_AMQP_URL and
# SKUFLOW_TEST_RABBITMQ_API. Uses the one at SKUFLOW_TEST_AMQP_URL, or 127.0.0.1:5672 if it answers; else
# starts an installed rabbitmq-server; else installs it from Debian's packages (root on Debian only).

tcp_open() { .venv/bin/python -c 'import socket,sys; socket.create_connection((sys.argv[1], int(sys.argv[2])), 2).close()' "$1" "$2" 2>/dev/null; }
http_ok() { .venv/bin/python -c 'import sys,urllib.request as u,base64
r=u.Request(sys.argv[1]); r.add_header("Authorization","Basic "+base64.b64encode(b"guest:guest").decode())
u.urlopen(r, timeout=2)' "$1" 2>/dev/null; }

ensure_rabbitmq() {
    export SKUFLOW_TEST_AMQP_URL="${SKUFLOW_TEST_AMQP_URL:-amqp://guest:guest@127.0.0.1:5672/}"
    local host port
    host=$(.venv/bin/python -c 'import sys,urllib.parse as p; print(p.urlsplit(sys.argv[1]).hostname or "127.0.0.1")' "$SKUFLOW_TEST_AMQP_URL")
    port=$(.venv/bin/python -c 'import sys,urllib.parse as p; print(p.urlsplit(sys.argv[1]).port or 5672)' "$SKUFLOW_TEST_AMQP_URL")
    export SKUFLOW_TEST_RABBITMQ_API="${SKUFLOW_TEST_RABBITMQ_API:-http://$host:15672}"

    if ! tcp_open "$host" "$port"; then
        case "$host" in 127.0.0.1|localhost) ;; *) die "RabbitMQ at $host:$port does not answer (SKUFLOW_TEST_AMQP_URL)";; esac
        if ! command -v rabbitmq-server >/dev/null 2>&1; then
            as_root_on_debian || die "no RabbitMQ on 127.0.0.1:5672: install rabbitmq-server (Debian: apt-get install rabbitmq-server) or set SKUFLOW_TEST_AMQP_URL"
            say "installing rabbitmq-server from Debian's packages"
            apt_install rabbitmq-server
        fi
        say "starting rabbitmq-server"
        rabbitmq-server -detached >&2 || true
        wait_for 90 "RabbitMQ on $host:$port" tcp_open "$host" "$port"
    fi
    if ! http_ok "$SKUFLOW_TEST_RABBITMQ_API/api/overview"; then
        command -v rabbitmq-plugins >/dev/null 2>&1 \
            || die "the RabbitMQ management API does not answer at $SKUFLOW_TEST_RABBITMQ_API: enable rabbitmq_management"
        say "enabling the RabbitMQ management plugin (per-test virtual hosts)"
        rabbitmq-plugins enable rabbitmq_management >&2
        wait_for 60 "the RabbitMQ management API" http_ok "$SKUFLOW_TEST_RABBITMQ_API/api/overview"
    fi
    say "RabbitMQ ready at $host:$port"
}
