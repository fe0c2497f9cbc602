#!/usr/bin/env bash
# Make sure PostgreSQL, RabbitMQ and Redis answer on 127.0.0.1 (the defaults of
# AIPORT_DATABASE_URL / AIPORT_AMQP_URL / AIPORT_REDIS_URL). Uses running servers as they are;
# on Debian/Ubuntu as root, installs and starts what is missing; otherwise
# prints the exact steps and fails.
set -euo pipefail

PG_HOST=127.0.0.1 PG_PORT=5432 MQ_HOST=127.0.0.1 MQ_PORT=5672 REDIS_HOST=127.0.0.1 REDIS_PORT=6379

up() { (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null; }
wait_up() { for _ in $(seq 1 60); do up "$1" "$2" && return 0; sleep 1; done; return 1; }
can_install() { [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; }
apt_updated=0
apt_install() {
  if [ "$apt_updated" = 0 ]; then apt-get update -qq; apt_updated=1; fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}

ensure_postgres() {
  up $PG_HOST $PG_PORT && return 0
  if ! can_install; then
    cat >&2 <<'STEPS'
PostgreSQL is not answering on 127.0.0.1:5432. Install and start it, e.g. on Debian/Ubuntu:
  sudo apt-get update && sudo apt-get install -y postgresql
  sudo pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start
  sudo -u postgres psql -c "ALTER USER postgres PASSWORD 'postgres'"
or point AIPORT_DATABASE_URL at a server you have (postgresql+psycopg://USER:PASS@HOST:PORT/aiport).
STEPS
    return 1
  fi
  if ! command -v pg_ctlcluster >/dev/null; then
    echo "deps: installing PostgreSQL ..."; apt_install postgresql
  fi
  echo "deps: starting PostgreSQL ..."
  pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | sort -V | tail -1)" main start || true
  wait_up $PG_HOST $PG_PORT || { echo "deps: PostgreSQL did not start" >&2; return 1; }
  # The default URL logs in as postgres/postgres over TCP.
  su postgres -c "psql -qc \"ALTER USER postgres PASSWORD 'postgres'\"" >/dev/null
}

ensure_rabbitmq() {
  up $MQ_HOST $MQ_PORT && return 0
  if ! can_install; then
    cat >&2 <<'STEPS'
RabbitMQ is not answering on 127.0.0.1:5672. Install and start it, e.g. on Debian/Ubuntu:
  sudo apt-get update && sudo apt-get install -y rabbitmq-server
  sudo rabbitmq-server -detached
or point AIPORT_AMQP_URL at a broker you have.
STEPS
    return 1
  fi
  if ! command -v rabbitmq-server >/dev/null; then
    echo "deps: installing RabbitMQ ..."; apt_install rabbitmq-server
  fi
  echo "deps: starting RabbitMQ ..."
  rabbitmq-server -detached || true
  wait_up $MQ_HOST $MQ_PORT || { echo "deps: RabbitMQ did not start" >&2; return 1; }
}

ensure_redis() {
  up $REDIS_HOST $REDIS_PORT && return 0
  if ! can_install; then
    cat >&2 <<'STEPS'
Redis is not answering on 127.0.0.1:6379 (accounts keeps its rate limits there). E.g. on Debian/Ubuntu:
  sudo apt-get update && sudo apt-get install -y redis-server
  sudo redis-server --daemonize yes --bind 127.0.0.1 --port 6379
or point AIPORT_REDIS_URL at a Redis you have.
STEPS
    return 1
  fi
  if ! command -v redis-server >/dev/null; then
    echo "deps: installing Redis ..."; apt_install redis-server
  fi
  echo "deps: starting Redis ..."
  redis-server --daemonize yes --bind 127.0.0.1 --port $REDIS_PORT >/dev/null || true
  wait_up $REDIS_HOST $REDIS_PORT || { echo "deps: Redis did not start" >&2; return 1; }
}

# A custom URL means the operator runs their own servers: trust it.
if [ -z "${AIPORT_DATABASE_URL:-}" ]; then ensure_postgres; fi
if [ -z "${AIPORT_AMQP_URL:-}" ]; then ensure_rabbitmq; fi
if [ -z "${AIPORT_REDIS_URL:-}" ]; then ensure_redis; fi
