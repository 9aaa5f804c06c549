#!/bin/bash
# The official postgres image's first-start contract, for the Debian-built image: when PGDATA
# is empty, initdb with POSTGRES_USER's password (from POSTGRES_PASSWORD_FILE or
# POSTGRES_PASSWORD), create POSTGRES_DB, run /docker-entrypoint-initdb.d/*.sh and *.sql, then
# exec the server. Runs as whatever uid the compose file gives; nothing here needs root.
set -Eeuo pipefail

if [ "${1:0:1}" = '-' ]; then set -- postgres "$@"; fi

file_env() {
  local var="$1" file_var="${1}_FILE"
  if [ -n "${!var:-}" ] && [ -n "${!file_var:-}" ]; then
    echo "error: both $var and $file_var are set (only one is allowed)" >&2
    exit 1
  fi
  if [ -n "${!file_var:-}" ]; then
    export "$var"="$(< "${!file_var}")"
    unset "$file_var"
  fi
}

if [ "$1" = 'postgres' ] && [ ! -s "$PGDATA/PG_VERSION" ]; then
  # initdb needs a passwd entry for its uid; the compose file may run us as any uid.
  if ! getent passwd "$(id -u)" >/dev/null; then
    NSS_WRAPPER_PASSWD="$(mktemp)"
    NSS_WRAPPER_GROUP="$(mktemp)"
    printf 'postgres:x:%s:%s:PostgreSQL:%s:/bin/false\n' "$(id -u)" "$(id -g)" "$PGDATA" \
      > "$NSS_WRAPPER_PASSWD"
    printf 'postgres:x:%s:\n' "$(id -g)" > "$NSS_WRAPPER_GROUP"
    export LD_PRELOAD=libnss_wrapper.so NSS_WRAPPER_PASSWD NSS_WRAPPER_GROUP
  fi
  file_env POSTGRES_PASSWORD
  : "${POSTGRES_USER:=postgres}"
  : "${POSTGRES_DB:=$POSTGRES_USER}"
  if [ -z "${POSTGRES_PASSWORD:-}" ]; then
    echo "error: database is uninitialized and no POSTGRES_PASSWORD(_FILE) is set" >&2
    exit 1
  fi
  initdb --username="$POSTGRES_USER" --pwfile=<(printf '%s\n' "$POSTGRES_PASSWORD") \
    --encoding=UTF8 --locale=C.UTF-8 --auth-local=trust --auth-host=scram-sha-256 \
    ${POSTGRES_INITDB_ARGS:-} >/dev/null
  printf '\nhost all all all scram-sha-256\n' >> "$PGDATA/pg_hba.conf"
  # A private server on the unix socket only, for the initialisation steps.
  pg_ctl -D "$PGDATA" -o "-c listen_addresses='' -c unix_socket_directories=/var/run/postgresql" \
    -w start >/dev/null
  psql=(psql -v ON_ERROR_STOP=1 --no-psqlrc --username "$POSTGRES_USER" --dbname postgres)
  if [ "$POSTGRES_DB" != 'postgres' ]; then
    "${psql[@]}" -q --set db="$POSTGRES_DB" <<<'CREATE DATABASE :"db";'
  fi
  for f in /docker-entrypoint-initdb.d/*; do
    case "$f" in
      *.sh) echo "running $f"; . "$f" ;;
      *.sql) echo "running $f"; "${psql[@]}" --dbname "$POSTGRES_DB" -f "$f" ;;
      *) ;;
    esac
  done
  pg_ctl -D "$PGDATA" -m fast -w stop >/dev/null
  unset POSTGRES_PASSWORD
  if [ -n "${NSS_WRAPPER_PASSWD:-}" ]; then
    rm -f "$NSS_WRAPPER_PASSWD" "$NSS_WRAPPER_GROUP"
    unset LD_PRELOAD NSS_WRAPPER_PASSWD NSS_WRAPPER_GROUP
  fi
  echo "PostgreSQL init process complete; ready for start up."
fi

exec "$@"
