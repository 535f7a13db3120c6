# Sourced by .ci/run: a throwaway PostgreSQL cluster for tests/db_postgres.rs.
#
# postgres_start: initdb in a temp dir, start the server on 127.0.0.1 on a free port chosen
# now (fsync off: the data is thrown away), create the database towerscope_test, export
# TOWERSCOPE_TEST_POSTGRES_URL. postgres_stop: stop the server and remove the dir (run it
# from a trap). PostgreSQL refuses to run as root: as root the cluster belongs to the user
# `postgres` (Debian's package creates it). About two seconds in all.

postgres_bin() { # the directory of initdb (links resolved: createdb is beside it), else Debian's newest /usr/lib/postgresql/<version>/bin
  if command -v initdb > /dev/null; then
    dirname "$(readlink -f "$(command -v initdb)")"
  else
    { find /usr/lib/postgresql -path '*/bin/initdb' 2> /dev/null || true; } | sort -V | tail -1 \
      | xargs -r dirname
  fi
}

postgres_as=()
postgres_dir=""

postgres_start() {
  local bin port
  bin=$(postgres_bin)
  [ -n "$bin" ] || { echo "initdb not found: apt-get install postgresql" >&2; return 1; }
  postgres_dir=$(mktemp -d "${TMPDIR:-/tmp}/towerscope-pg.XXXXXX")
  if [ "$(id -u)" = 0 ]; then
    chown postgres: "$postgres_dir"
    postgres_as=(runuser -u postgres --)
  fi
  port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  "${postgres_as[@]}" "$bin/initdb" -D "$postgres_dir/data" -U postgres -A trust -E UTF8 \
    --no-sync > "$postgres_dir/initdb.log" 2>&1 \
    || { cat "$postgres_dir/initdb.log"; return 1; }
  "${postgres_as[@]}" "$bin/pg_ctl" -D "$postgres_dir/data" -l "$postgres_dir/server.log" -w -s \
    -o "-c listen_addresses=127.0.0.1 -p $port -k $postgres_dir -c fsync=off" start \
    || { cat "$postgres_dir/server.log"; return 1; }
  "${postgres_as[@]}" "$bin/createdb" -h 127.0.0.1 -p "$port" -U postgres towerscope_test
  export TOWERSCOPE_TEST_POSTGRES_URL="postgres://postgres@127.0.0.1:$port/towerscope_test"
  echo "$("$bin/postgres" --version) on 127.0.0.1:$port"
}

postgres_stop() {
  [ -n "$postgres_dir" ] || return 0
  if [ -f "$postgres_dir/data/postmaster.pid" ]; then
    "${postgres_as[@]}" "$(postgres_bin)/pg_ctl" -D "$postgres_dir/data" -m immediate -s stop || true
  fi
  rm -rf "$postgres_dir"
  postgres_dir=""
}
