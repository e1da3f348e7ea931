#!/usr/bin/env bash
# Test environment for kiln's integration tests: a Docker engine, a local `busybox:latest`
# image, two local registries (one open, one behind basic auth) and a PostgreSQL 15 server, all
# on this machine.
#
#   scripts/test-env.sh            install what is missing, start what is down, verify, write env
#   scripts/test-env.sh --verify   the same, and re-run the slow checks even if they passed before
#   scripts/test-env.sh --stop     stop what this script started (registries, postgres, dockerd)
#
# Run as root on Debian (bookworm). Idempotent: a second run with everything up only re-checks
# health (well under a second) and rewrites the env file. The facts tests need are written to
# $STATE_DIR/env as KEY=value lines (`set -a; . /var/lib/kiln-test/env; set +a`).
#
# Why it looks like this (what was found on the development/CI machine, a Debian 12 VM with
# kernel 6.18, root, cgroup v1, no systemd, no internet but Debian's package mirror):
# - No container image can be pulled, so the test image is built here from Debian's static
#   busybox (busybox-static) with `docker import`, and the registries are Debian's
#   `docker-registry` (CNCF distribution 2.8) run as plain processes, not as containers.
# - The engine is Debian's docker.io 20.10 (Engine API 1.41, the newest Debian has). Clients must
#   negotiate the API version: a request pinned to a newer version (e.g. bollard's default /v1.47)
#   is refused with "client version 1.47 is too new. Maximum supported API version is 1.41".
#   (The machine also has a newer static docker CLI in /usr/local/bin; it negotiates and works.)
# - There is no systemd, and package installs may not start services (policy-rc.d), so dockerd
#   and the registries are started here in the background, each with a pid file and a log in
#   $STATE_DIR; `--stop` uses the pid files.
# - Storage driver: overlay2 works here (the root fs is ext4, overlay mounts are allowed). The
#   script probes an overlay mount first and falls back to fuse-overlayfs (if installed and
#   /dev/fuse exists) and then vfs, trying each by actually starting dockerd with it.
# - iptables (nf_tables backend) and Linux bridges work, so dockerd runs with its default
#   networking and user-defined bridge networks with embedded DNS work: containers on one
#   network reach each other by name and alias (verified below with busybox httpd + wget).
#   If iptables were unusable the script would start dockerd with --iptables=false (a fallback
#   not exercised here: published ports and the egress guard below need iptables).
# - Only loopback addresses may be targeted from this machine. Container addresses live on
#   docker's bridges inside network namespaces this script's dockerd made; to make sure nothing
#   a test container does can leave the machine, dockerd runs with --ip-masq=false and a
#   KILN-EGRESS chain hooked into DOCKER-USER drops every forwarded packet that comes from a
#   docker bridge and is not going to a docker bridge. Registries listen on 127.0.0.1 only;
#   dockerd reaches them from the host namespace, and docker treats 127.0.0.0/8 registries as
#   insecure (plain HTTP) by default, so no daemon.json is needed.
# - PostgreSQL is Debian's postgresql-15 run as a plain process (not the Debian cluster service)
#   as the `postgres` system user (postgres refuses root), its cluster in $STATE_DIR/postgres,
#   listening on 127.0.0.1:$POSTGRES_PORT only (no Unix socket), trust auth for loopback. Its
#   binaries are in /usr/lib/postgresql/15/bin (Debian) or /usr/local/bin (this machine kind).
#   Tests that need a database create their own (CREATE DATABASE kiln_t_…), so concurrent tests
#   never share state; the ones left by failed tests are dropped when this script starts it.
set -euo pipefail

STATE_DIR="${KILN_TEST_STATE_DIR:-/var/lib/kiln-test}"
ENV_FILE="$STATE_DIR/env"
DOCKER_SOCK=/var/run/docker.sock
export DOCKER_HOST="unix://$DOCKER_SOCK"
IMAGE=busybox:latest
DOCKER_IMAGE=docker:latest
REGISTRY=127.0.0.1:5000
AUTH_REGISTRY=127.0.0.1:5001
REGISTRY_USER=kiln
REGISTRY_PASSWORD=kiln-test-password
# libssl-dev, pkg-config and zlib1g-dev: the worker's git2 (libgit2 with HTTPS and SSH) builds
# against them. openssh-server: the tests' own sshd (and ssh-keygen, ssh-keyscan) for SSH git
# remotes; its service is not started (policy-rc.d below), tests start sshd on free ports.
# python3-venv: the venv schemathesis (the API fuzzer of tests/api_fuzz.rs) is installed into.
# iproute2: `ip netns` and veth pairs for the partition tests (tests/support/netns.rs).
# postgresql-15: the store's second backend (its cluster service is not started, policy-rc.d).
# chromium, fonts-dejavu-core: the browser the web app's end-to-end tests drive (tests/ui.rs,
# Playwright's playwright-core with Debian's Chromium; nothing is downloaded by Playwright).
PACKAGES=(docker.io docker-registry busybox-static apache2-utils curl libssl-dev pkg-config zlib1g-dev
  openssh-server python3-venv iproute2 postgresql-15 chromium fonts-dejavu-core)
[[ ${KILN_TEST_EMULATION:-yes} == no ]] || PACKAGES+=(qemu-user-static binfmt-support)
SCHEMATHESIS_REQUIREMENTS="$(dirname "${BASH_SOURCE[0]}")/schemathesis-requirements.txt"
DOCKERD_WAIT=60   # seconds for dockerd to answer
REGISTRY_WAIT=20  # seconds for a registry to answer
POSTGRES_PORT=5433
POSTGRES_ROLE=kiln # the cluster's superuser; tests connect as it
POSTGRES_WAIT=30   # seconds for postgres to accept connections
POSTGRES_URL="postgres://$POSTGRES_ROLE@127.0.0.1:$POSTGRES_PORT/postgres"

log() { printf 'test-env: %s\n' "$*" >&2; }
die() {
  log "error: $*"
  exit 1
}

usage() { sed -n '2,8p' "$0" | sed 's/^# \{0,1\}//'; }

# --- processes we start -------------------------------------------------------------------

# spawn NAME CMD...: start CMD detached (own session, stdin closed, output to NAME.log) and
# record its pid in NAME.pid. The pid is written by the shell that then execs CMD, so it is
# CMD's pid whether or not setsid had to fork. fd 9 (the lock) is not inherited.
spawn() {
  local name=$1
  shift
  rm -f "$STATE_DIR/$name.pid"
  printf '=== %s: %s\n' "$(date -u +%FT%TZ)" "$*" >"$STATE_DIR/$name.log"
  # shellcheck disable=SC2016 # $$ and $@ are the inner shell's
  setsid bash -c 'echo $$ >"$0"; exec "$@"' "$STATE_DIR/$name.pid" "$@" \
    </dev/null >>"$STATE_DIR/$name.log" 2>&1 9>&- &
  for _ in $(seq 50); do
    [[ -s $STATE_DIR/$name.pid ]] && return 0
    sleep 0.1
  done
  die "$name did not start (no pid file); log: $STATE_DIR/$name.log"
}

# pid_of NAME COMM: the pid in NAME.pid if that process is alive and is COMM (guards against
# a stale pid file whose pid was reused); fails otherwise.
pid_of() {
  local file="$STATE_DIR/$1.pid" pid
  [[ -s $file ]] || return 1
  pid=$(<"$file")
  [[ $pid =~ ^[0-9]+$ ]] || return 1
  [[ -r /proc/$pid/comm && $(</proc/"$pid"/comm) == "$2" ]] || return 1
  echo "$pid"
}

# stop_one NAME COMM TIMEOUT: TERM the recorded process, KILL it after TIMEOUT seconds.
stop_one() {
  local name=$1 comm=$2 timeout=$3 pid
  if ! pid=$(pid_of "$name" "$comm"); then
    rm -f "$STATE_DIR/$name.pid"
    return 1
  fi
  log "stopping $name (pid $pid)"
  kill -TERM "$pid" 2>/dev/null || true
  for _ in $(seq $((timeout * 10))); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  if kill -0 "$pid" 2>/dev/null; then
    log "$name did not stop in ${timeout}s, killing it"
    kill -KILL "$pid" 2>/dev/null || true
  fi
  rm -f "$STATE_DIR/$name.pid"
}

log_tail() {
  local f="$STATE_DIR/$1.log"
  [[ -f $f ]] || return 0
  log "last lines of $f:"
  tail -n "${2:-25}" "$f" | sed 's/^/    /' >&2
}

# --- 1. packages --------------------------------------------------------------------------

install_packages() {
  local missing=() p
  for p in "${PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
  done
  [[ ${#missing[@]} -eq 0 ]] && return 0
  log "installing ${missing[*]} (output in $STATE_DIR/apt.log)"
  # Package scripts must not start services (dockerd, Debian's registry on :5000): this script
  # starts its own. Debian's policy-rc.d mechanism says so; add one for the install if absent.
  local policy=/usr/sbin/policy-rc.d added=0 rc=0
  if [[ ! -e $policy ]]; then
    printf '#!/bin/sh\nexit 101\n' >"$policy"
    chmod 0755 "$policy"
    added=1
  fi
  {
    DEBIAN_FRONTEND=noninteractive apt-get update -q &&
      DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}"
  } >"$STATE_DIR/apt.log" 2>&1 || rc=$?
  [[ $added == 1 ]] && rm -f "$policy"
  if [[ $rc != 0 ]]; then
    log_tail apt 30
    die "apt-get failed (exit $rc)"
  fi
}

# schemathesis from PyPI into $STATE_DIR/schemathesis (a venv), with every package at the version
# pinned in scripts/schemathesis-requirements.txt, unless the venv already holds exactly that set.
install_schemathesis() {
  local venv="$STATE_DIR/schemathesis" want
  want=$(grep -v '^#' "$SCHEMATHESIS_REQUIREMENTS" | sort)
  if [[ -x "$venv/bin/pip" && "$("$venv/bin/pip" freeze 2>/dev/null | sort)" == "$want" ]]; then
    return 0
  fi
  log "installing schemathesis (output in $STATE_DIR/pip.log)"
  rm -rf "$venv"
  {
    python3 -m venv "$venv" &&
      "$venv/bin/pip" install -q --disable-pip-version-check --no-deps -r "$SCHEMATHESIS_REQUIREMENTS"
  } >"$STATE_DIR/pip.log" 2>&1 || {
    log_tail pip 30
    die "installing schemathesis failed"
  }
}

# --- 2. docker engine ---------------------------------------------------------------------

engine_answers() {
  [[ -S $DOCKER_SOCK ]] &&
    curl -fsS --max-time 2 --unix-socket "$DOCKER_SOCK" http://docker/_ping >/dev/null 2>&1
}

overlay_mount_works() {
  local d rc=1
  mkdir -p /var/lib/docker
  d=$(mktemp -d /var/lib/docker/kiln-overlay-probe.XXXXXX)
  mkdir "$d/lower" "$d/upper" "$d/work" "$d/merged"
  if mount -t overlay overlay -o "lowerdir=$d/lower,upperdir=$d/upper,workdir=$d/work" \
    "$d/merged" 2>/dev/null; then
    umount "$d/merged"
    rc=0
  fi
  rm -rf "$d"
  return $rc
}

iptables_works() {
  command -v iptables >/dev/null 2>&1 &&
    iptables -w -n -L FORWARD >/dev/null 2>&1 &&
    iptables -w -t nat -n -L POSTROUTING >/dev/null 2>&1
}

# Drop forwarded traffic from docker bridges to anything that is not a docker bridge or a test
# namespace: test containers can talk to each other, to the host and to the tests' namespaces,
# never past this machine.
ensure_egress_guard() {
  iptables_works || return 0
  iptables -w -N KILN-EGRESS 2>/dev/null || true
  iptables -w -F KILN-EGRESS
  iptables -w -A KILN-EGRESS -o docker0 -j RETURN
  iptables -w -A KILN-EGRESS -o br-+ -j RETURN
  # The host ends of test network namespaces (tests/support/netns.rs): a registry a test runs
  # in one is reached from step containers too.
  iptables -w -A KILN-EGRESS -o kh+ -j RETURN
  iptables -w -A KILN-EGRESS -i docker0 -j DROP
  iptables -w -A KILN-EGRESS -i br-+ -j DROP
  iptables -w -N DOCKER-USER 2>/dev/null || true
  iptables -w -C DOCKER-USER -j KILN-EGRESS 2>/dev/null || iptables -w -I DOCKER-USER -j KILN-EGRESS
}

remove_egress_guard() {
  iptables_works || return 0
  while iptables -w -D DOCKER-USER -j KILN-EGRESS 2>/dev/null; do :; done
  iptables -w -F KILN-EGRESS 2>/dev/null || true
  iptables -w -X KILN-EGRESS 2>/dev/null || true
}

start_dockerd() {
  if engine_answers; then
    if pid_of dockerd dockerd >/dev/null; then
      ensure_egress_guard
    else
      log "using the engine already answering on $DOCKER_SOCK (not started by this script)"
    fi
    return 0
  fi
  command -v dockerd >/dev/null 2>&1 || die "dockerd is missing (package docker.io)"

  local net_flags=(--ip-masq=false)
  if ! iptables_works; then
    log "iptables is not usable here: starting dockerd with --iptables=false"
    net_flags=(--iptables=false --ip-masq=false)
  fi
  if ! ip link add kiln-brprobe type bridge 2>/dev/null; then
    log "cannot create Linux bridges here: dockerd gets --bridge=none (no bridge networks!)"
    net_flags+=(--bridge=none)
  else
    ip link del kiln-brprobe
  fi

  # Storage drivers to try, best first. A recorded choice (or KILN_TEST_STORAGE_DRIVER) goes
  # first so the images of earlier runs are found again.
  local drivers=() d
  [[ -n ${KILN_TEST_STORAGE_DRIVER:-} ]] && drivers+=("$KILN_TEST_STORAGE_DRIVER")
  [[ -s $STATE_DIR/storage-driver ]] && drivers+=("$(<"$STATE_DIR/storage-driver")")
  overlay_mount_works && drivers+=(overlay2)
  [[ -c /dev/fuse ]] && command -v fuse-overlayfs >/dev/null 2>&1 && drivers+=(fuse-overlayfs)
  drivers+=(vfs)

  local tried=" " pid
  for d in "${drivers[@]}"; do
    [[ $tried == *" $d "* ]] && continue
    tried+="$d "
    log "starting dockerd (storage driver $d, log $STATE_DIR/dockerd.log)"
    spawn dockerd dockerd --host "unix://$DOCKER_SOCK" --storage-driver "$d" "${net_flags[@]}"
    pid=$(<"$STATE_DIR/dockerd.pid")
    for _ in $(seq $((DOCKERD_WAIT * 5))); do
      engine_answers && break
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.2
    done
    if engine_answers; then
      echo "$d" >"$STATE_DIR/storage-driver"
      ensure_egress_guard
      return 0
    fi
    if kill -0 "$pid" 2>/dev/null; then
      log_tail dockerd
      stop_one dockerd dockerd 10 || true
      die "dockerd (pid $pid) did not answer on $DOCKER_SOCK within ${DOCKERD_WAIT}s"
    fi
    log "dockerd exited with storage driver $d"
    log_tail dockerd 10
    rm -f "$STATE_DIR/dockerd.pid"
  done
  die "dockerd did not start with any storage driver (tried:$tried); see $STATE_DIR/dockerd.log"
}

# --- 3. the test image --------------------------------------------------------------------

# A busybox root filesystem from the busybox binary $1, imported as image $2 (test image label
# $3). Applet links come from the host's busybox: the arm64 package is the same Debian version.
import_busybox() {
  local binary=$1 image=$2 label=$3 root p
  root=$(mktemp -d "$STATE_DIR/rootfs.XXXXXX")
  mkdir -p "$root"/{bin,sbin,usr/bin,usr/sbin,etc,root,home,tmp,var/tmp,proc,sys,dev}
  chmod 0700 "$root/root"
  chmod 1777 "$root/tmp" "$root/var/tmp"
  install -m 0755 "$binary" "$root/bin/busybox"
  # One symlink per applet at its usual place (bin/sh, usr/bin/wget, sbin/ifconfig, ...), as
  # `busybox --install -s` would make inside a chroot.
  while read -r p; do
    if [[ -n $p && $p != bin/busybox && ! -e $root/$p ]]; then ln -s /bin/busybox "$root/$p"; fi
  done < <(/bin/busybox --list-full)
  printf '%s\n' 'root:x:0:0:root:/root:/bin/sh' 'nobody:x:65534:65534:nobody:/home:/bin/false' \
    >"$root/etc/passwd"
  printf '%s\n' 'root:x:0:' 'nobody:x:65534:' >"$root/etc/group"
  printf '%s\n' 'hosts: files dns' >"$root/etc/nsswitch.conf"
  tar --numeric-owner --owner=0 --group=0 -C "$root" -cf - . |
    docker import \
      --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
      --change 'CMD ["sh"]' \
      --change "LABEL org.kiln.test-image=$label" \
      --message "kiln test image: Debian $label" \
      - "$image" >/dev/null
  rm -rf "$root"
}

build_image() {
  docker image inspect "$IMAGE" >/dev/null 2>&1 && return 0
  [[ -x /bin/busybox ]] || die "/bin/busybox is missing (package busybox-static)"
  local version
  version=$(dpkg-query -W -f='${Version}' busybox-static)
  log "building $IMAGE from Debian's busybox-static $version"
  import_busybox /bin/busybox "$IMAGE" "busybox-static-$version"
  local out
  out=$(docker run --rm "$IMAGE" echo ok) || die "docker run --rm $IMAGE echo ok failed"
  [[ $out == ok ]] || die "docker run --rm $IMAGE echo ok printed '$out'"
}

# `docker:latest` for ACR-style `cmd: docker …` steps: busybox plus a static docker CLI (this
# machine kind has one in /usr/local/bin; Debian's docker.io CLI is dynamically linked and would
# need its libraries), with the entrypoint of Docker Hub's image: arguments that are a docker
# subcommand or a flag run as `docker …`, anything else runs as given.
build_docker_image() {
  local cli=${KILN_TEST_DOCKER_CLI:-/usr/local/bin/docker} version dir out
  [[ -x $cli ]] || die "$cli is missing: the docker:latest test image needs a static docker CLI (set KILN_TEST_DOCKER_CLI)"
  out=$(ldd "$cli" 2>&1 || true)
  [[ $out == *"not a dynamic executable"* ]] ||
    die "$cli is not statically linked: it cannot run inside the busybox-based $DOCKER_IMAGE"
  version=$("$cli" --version | sed -n 's/^Docker version \([^,]*\),.*/\1/p')
  if [[ $(docker image inspect --format '{{index .Config.Labels "org.kiln.test-image"}}' "$DOCKER_IMAGE" 2>/dev/null) == "docker-cli-$version" ]]; then
    return 0
  fi
  log "building $DOCKER_IMAGE from $IMAGE and the docker CLI $version ($cli)"
  dir=$(mktemp -d "$STATE_DIR/docker-image.XXXXXX")
  install -m 0755 "$cli" "$dir/docker"
  printf '%s\n' '#!/bin/sh' 'set -e' \
    'if [ "${1#-}" != "$1" ] || docker help "$1" >/dev/null 2>&1; then' \
    '  set -- docker "$@"' 'fi' 'exec "$@"' >"$dir/docker-entrypoint.sh"
  chmod 0755 "$dir/docker-entrypoint.sh"
  printf '%s\n' "FROM $IMAGE" 'COPY docker docker-entrypoint.sh /usr/local/bin/' \
    "LABEL org.kiln.test-image=docker-cli-$version" \
    'ENTRYPOINT ["docker-entrypoint.sh"]' 'CMD ["sh"]' >"$dir/Dockerfile"
  DOCKER_BUILDKIT=0 docker build -q -t "$DOCKER_IMAGE" "$dir" >/dev/null 2>"$STATE_DIR/docker-image.log" ||
    die "building $DOCKER_IMAGE failed: $(cat "$STATE_DIR/docker-image.log")"
  rm -rf "$dir"
  out=$(docker run --rm "$DOCKER_IMAGE" --version) || die "docker run --rm $DOCKER_IMAGE --version failed"
  [[ $out == "Docker version $version"* ]] || die "docker run --rm $DOCKER_IMAGE --version printed '$out'"
}

# --- 3b. emulation: qemu-aarch64 in binfmt_misc and an arm64 image -----------------------
# Runs for linux/arm64 execute arm64 binaries on this machine through Debian's qemu-user-static.
# The F flag makes the kernel open the interpreter when the entry is registered, so it works
# inside containers (whose root holds no qemu); P keeps argv[0], which busybox applets need.
# There is no systemd here: binfmt_misc is mounted and the entry written by hand when missing.
# KILN_TEST_EMULATION=no skips all of it.

BINFMT=/proc/sys/fs/binfmt_misc
ARM64_IMAGE=busybox-arm64:latest
EMULATION=${KILN_TEST_EMULATION:-yes}

ensure_binfmt() {
  [[ -e $BINFMT/register ]] || mount -t binfmt_misc binfmt_misc "$BINFMT" ||
    die "cannot mount binfmt_misc on $BINFMT"
  local entry=$BINFMT/qemu-aarch64 qemu=/usr/bin/qemu-aarch64-static
  [[ -x $qemu ]] || die "$qemu is missing (package qemu-user-static)"
  if [[ -e $entry ]] && grep -q '^flags: .*F' "$entry" && grep -q '^flags: .*P' "$entry"; then
    [[ $(head -n1 "$entry") == enabled ]] || echo 1 >"$entry"
    return 0
  fi
  # Without F (binfmt-support's default) the entry does not work in containers; without P,
  # QEMU loses argv[0] and busybox's shell runs `wc`, `ls`, ... as `sh` (seen here).
  if [[ -e $entry ]]; then echo -1 >"$entry"; fi
  log "registering qemu-aarch64 in binfmt_misc (flags FP)"
  # ELF header of an aarch64 executable (e_machine 0xb7), the mask Debian's qemu package uses.
  printf '%s' ':qemu-aarch64:M::\x7fELF\x02\x01\x01\x00\x00\x00\x00\x00\x00\x00\x00\x00\x02\x00\xb7\x00:\xff\xff\xff\xff\xff\xff\xff\x00\xff\xff\xff\xff\xff\xff\xff\xff\xfe\xff\xff\xff:'"$qemu"':FP' \
    >"$BINFMT/register" || die "writing $BINFMT/register failed"
}

build_arm64_image() {
  docker image inspect "$ARM64_IMAGE" >/dev/null 2>&1 && return 0
  dpkg --print-foreign-architectures | grep -qx arm64 || dpkg --add-architecture arm64
  local dir version
  dir=$(mktemp -d "$STATE_DIR/arm64.XXXXXX")
  {
    (cd "$dir" && apt-get download busybox-static:arm64) ||
      { apt-get update -q && (cd "$dir" && apt-get download busybox-static:arm64); }
  } >>"$STATE_DIR/apt.log" 2>&1 || die "apt-get download busybox-static:arm64 failed; see $STATE_DIR/apt.log"
  dpkg-deb -x "$dir"/busybox-static_*_arm64.deb "$dir/deb"
  version=$(dpkg-deb -f "$dir"/busybox-static_*_arm64.deb Version)
  log "building $ARM64_IMAGE from Debian's busybox-static:arm64 $version"
  import_busybox "$dir/deb/bin/busybox" "$ARM64_IMAGE" "busybox-static-arm64-$version"
  # Docker 20.10 records the daemon's own architecture even with `import --platform`: rewrite
  # the config's architecture in a saved copy (a new config, so a new image ID) and load that.
  local imported
  imported=$(docker image inspect --format '{{.Id}}' "$ARM64_IMAGE")
  mkdir "$dir/saved"
  docker save "$ARM64_IMAGE" | tar -x -C "$dir/saved"
  python3 - "$dir/saved" <<'PY' || die "rewriting $ARM64_IMAGE's architecture failed"
import hashlib, json, os, sys
os.chdir(sys.argv[1])
manifest = json.load(open("manifest.json"))
old = manifest[0]["Config"]
config = json.load(open(old))
config["architecture"], config["variant"] = "arm64", "v8"
data = json.dumps(config, separators=(",", ":")).encode()
new = hashlib.sha256(data).hexdigest() + ".json"
open(new, "wb").write(data)
os.remove(old)
manifest[0]["Config"] = new
json.dump(manifest, open("manifest.json", "w"))
PY
  tar -C "$dir/saved" -cf - . | docker load >/dev/null
  docker rmi "$imported" >/dev/null
  rm -rf "$dir"
  local out
  out=$(docker run --rm --platform linux/arm64 "$ARM64_IMAGE" busybox uname -m) ||
    die "docker run --platform linux/arm64 $ARM64_IMAGE failed (is qemu-aarch64 registered?)"
  [[ $out == aarch64 ]] || die "$ARM64_IMAGE: uname -m printed '$out', expected aarch64"
}

# Containers on a user-defined bridge network reach each other by alias (embedded DNS).
# Note: Debian's busybox-static 1.35 `wget -T N` segfaults (even on a numeric address), so
# the image's wget is bounded with the `timeout` applet instead.
verify_network() {
  local net="kiln-test-probe-$$" srv="kiln-test-probe-httpd-$$" out rc=0
  docker network create "$net" >/dev/null
  if docker run -d --rm --name "$srv" --network "$net" --network-alias web "$IMAGE" \
    sh -c 'mkdir -p /www && echo kiln-net-ok >/www/index.html && exec httpd -f -p 8080 -h /www' \
    >/dev/null; then
    out=$(docker run --rm --network "$net" "$IMAGE" sh -c \
      'for i in $(seq 50); do timeout 2 wget -q -O - http://web:8080/ && exit 0; sleep 0.1; done; exit 1' \
      2>&1) || rc=$?
  else
    rc=1
  fi
  docker rm -f "$srv" >/dev/null 2>&1 || true
  docker network rm "$net" >/dev/null 2>&1 || true
  [[ $rc == 0 && $out == kiln-net-ok ]] ||
    die "containers on a user-defined network could not reach each other by alias: $out"
}

# --- 4. registries ------------------------------------------------------------------------

http_code() { curl -s -o /dev/null -w '%{http_code}' --max-time 2 "$@" || true; }

# write_if_changed FILE CONTENT: 0 if the file changed.
write_if_changed() {
  if [[ -f $1 && $(<"$1") == "$2" ]]; then return 1; fi
  printf '%s\n' "$2" >"$1.tmp"
  mv "$1.tmp" "$1"
}

ensure_htpasswd() {
  local f="$STATE_DIR/htpasswd"
  if [[ -s $f ]] && htpasswd -vb "$f" "$REGISTRY_USER" "$REGISTRY_PASSWORD" >/dev/null 2>&1; then
    return 1
  fi
  htpasswd -Bbn "$REGISTRY_USER" "$REGISTRY_PASSWORD" | sed '/^$/d' >"$f.tmp"
  chmod 0644 "$f.tmp"
  mv "$f.tmp" "$f"
}

# start_registry ADDR AUTH(yes|no) FORCE_RESTART(yes|no)
start_registry() {
  local addr=$1 auth=$2 restart=$3 port=${1##*:}
  local name="registry-$port" config="$STATE_DIR/registry-$port.yml" url="http://$1/v2/"
  local expect=200 body
  [[ $auth == yes ]] && expect=401
  mkdir -p "$STATE_DIR/$name"
  body="version: 0.1
log:
  level: info
  accesslog:
    disabled: true
  fields:
    service: $name
storage:
  filesystem:
    rootdirectory: $STATE_DIR/$name
  delete:
    enabled: true
  cache:
    blobdescriptor: inmemory
http:
  addr: $addr
  headers:
    X-Content-Type-Options: [nosniff]"
  [[ $auth == yes ]] && body+="
auth:
  htpasswd:
    realm: kiln-test
    path: $STATE_DIR/htpasswd"
  write_if_changed "$config" "$body" && restart=yes

  if pid_of "$name" docker-registry >/dev/null; then
    [[ $restart == no && $(http_code "$url") == "$expect" ]] && return 0
    stop_one "$name" docker-registry 10 || true
  elif [[ $(http_code "$url") != 000 ]]; then
    die "something this script did not start already answers on $addr; stop it first"
  fi
  log "starting registry on $addr (log $STATE_DIR/$name.log)"
  spawn "$name" docker-registry serve "$config"
  local pid
  pid=$(<"$STATE_DIR/$name.pid")
  for _ in $(seq $((REGISTRY_WAIT * 10))); do
    [[ $(http_code "$url") == "$expect" ]] && return 0
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  log_tail "$name"
  die "registry on $addr did not answer $expect on $url"
}

check_registries() {
  local code
  code=$(http_code "http://$REGISTRY/v2/")
  [[ $code == 200 ]] || die "http://$REGISTRY/v2/ answered $code, not 200"
  code=$(http_code "http://$AUTH_REGISTRY/v2/")
  [[ $code == 401 ]] || die "http://$AUTH_REGISTRY/v2/ without credentials answered $code, not 401"
  code=$(http_code -u "$REGISTRY_USER:$REGISTRY_PASSWORD" "http://$AUTH_REGISTRY/v2/")
  [[ $code == 200 ]] || die "http://$AUTH_REGISTRY/v2/ with credentials answered $code, not 200"
}

# push IMAGE REF [docker config dir]: tag, push, untag; output kept in push.log.
push() {
  local ref=$2 cfg=${3:-}
  docker tag "$1" "$ref"
  if ! DOCKER_CONFIG=${cfg:-${DOCKER_CONFIG:-$HOME/.docker}} docker push "$ref" \
    >"$STATE_DIR/push.log" 2>&1; then
    docker rmi "$ref" >/dev/null 2>&1 || true
    log_tail push
    die "docker push $ref failed"
  fi
  docker rmi "$ref" >/dev/null
}

verify_pushes() {
  push "$IMAGE" "$REGISTRY/busybox:latest"
  # A throwaway client config, so the machine's ~/.docker/config.json never holds credentials.
  local cfg
  cfg=$(mktemp -d "$STATE_DIR/docker-config.XXXXXX")
  printf '%s' "$REGISTRY_PASSWORD" |
    DOCKER_CONFIG=$cfg docker login "$AUTH_REGISTRY" -u "$REGISTRY_USER" --password-stdin \
      >"$STATE_DIR/login.log" 2>&1 || {
    rm -rf "$cfg"
    log_tail login
    die "docker login $AUTH_REGISTRY failed"
  }
  push "$IMAGE" "$AUTH_REGISTRY/busybox:latest" "$cfg"
  DOCKER_CONFIG=$cfg docker logout "$AUTH_REGISTRY" >/dev/null 2>&1 || true
  rm -rf "$cfg"
  local tags
  tags=$(curl -fsS "http://$REGISTRY/v2/busybox/tags/list")
  [[ $tags == *'"latest"'* ]] || die "$REGISTRY does not list busybox:latest after the push: $tags"
  tags=$(curl -fsS -u "$REGISTRY_USER:$REGISTRY_PASSWORD" "http://$AUTH_REGISTRY/v2/busybox/tags/list")
  [[ $tags == *'"latest"'* ]] || die "$AUTH_REGISTRY does not list busybox:latest after the push: $tags"
}

# --- 5. postgresql ------------------------------------------------------------------------

# pg_bin NAME: the PostgreSQL 15 program NAME, from either place it is installed.
pg_bin() {
  local d
  for d in /usr/lib/postgresql/15/bin /usr/local/bin; do
    [[ -x $d/$1 ]] && {
      echo "$d/$1"
      return 0
    }
  done
  die "PostgreSQL 15's $1 is missing (package postgresql-15)"
}

# CMD as the postgres system user: "${AS_POSTGRES[@]}" CMD... (setpriv execs, so a recorded
# pid stays CMD's).
AS_POSTGRES=(setpriv --reuid=postgres --regid=postgres --init-groups --)

pg_sql() { psql -X -q -A -t -v ON_ERROR_STOP=1 "$POSTGRES_URL" -c "$1" 2>/dev/null; }

pg_answers() { [[ $(pg_sql 'SELECT 1') == 1 ]]; }

start_postgres() {
  local data="$STATE_DIR/postgres" pid
  id postgres >/dev/null 2>&1 || die "the postgres system user is missing (package postgresql-15)"
  if pid_of postgres postgres >/dev/null; then
    pg_answers && return 0
    log "postgres is running but does not answer; restarting it"
    stop_postgres
  elif pg_answers; then
    die "something this script did not start already answers on 127.0.0.1:$POSTGRES_PORT"
  fi
  if [[ ! -s $data/PG_VERSION ]]; then
    log "creating the PostgreSQL cluster in $data (log $STATE_DIR/initdb.log)"
    rm -rf "$data"
    install -d -o postgres -g postgres -m 0700 "$data"
    "${AS_POSTGRES[@]}" "$(pg_bin initdb)" -D "$data" -U "$POSTGRES_ROLE" --auth=trust \
      --encoding=UTF8 --locale=C.UTF-8 >"$STATE_DIR/initdb.log" 2>&1 || {
      log_tail initdb
      die "initdb failed"
    }
  fi
  log "starting postgres on 127.0.0.1:$POSTGRES_PORT (log $STATE_DIR/postgres.log)"
  # No Unix socket (its default directory belongs to Debian's service); fsync stays on.
  spawn postgres "${AS_POSTGRES[@]}" "$(pg_bin postgres)" -D "$data" -p "$POSTGRES_PORT" \
    -c listen_addresses=127.0.0.1 -c unix_socket_directories= -c max_connections=300
  pid=$(<"$STATE_DIR/postgres.pid")
  for _ in $(seq $((POSTGRES_WAIT * 10))); do
    pg_answers && break
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  if ! pg_answers; then
    log_tail postgres
    die "postgres did not accept connections on 127.0.0.1:$POSTGRES_PORT within ${POSTGRES_WAIT}s"
  fi
  # Nothing can be using a test database yet: drop what failed tests of earlier runs left.
  local db
  for db in $(pg_sql "SELECT datname FROM pg_database WHERE datname LIKE 'kiln\_t\_%'"); do
    pg_sql "DROP DATABASE \"$db\"" >/dev/null || log "could not drop stale database $db"
  done
}

# Fast shutdown (TERM would wait for every client to disconnect).
stop_postgres() {
  local pid
  pid=$(pid_of postgres postgres) || {
    rm -f "$STATE_DIR/postgres.pid"
    return 1
  }
  log "stopping postgres (pid $pid)"
  kill -INT "$pid" 2>/dev/null || true
  for _ in $(seq 300); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  kill -0 "$pid" 2>/dev/null && die "postgres (pid $pid) did not stop in 30s"
  rm -f "$STATE_DIR/postgres.pid"
}

# --- 6. env file --------------------------------------------------------------------------

write_env() {
  local api driver
  api=$(docker version --format '{{.Server.APIVersion}}')
  driver=$(docker info --format '{{.Driver}}')
  cat >"$ENV_FILE.tmp" <<EOF
DOCKER_HOST=$DOCKER_HOST
KILN_TEST_DOCKER_API_VERSION=$api
KILN_TEST_STORAGE_DRIVER=$driver
KILN_TEST_IMAGE=$IMAGE
KILN_TEST_DOCKER_IMAGE=$DOCKER_IMAGE
KILN_TEST_REGISTRY=$REGISTRY
KILN_TEST_AUTH_REGISTRY=$AUTH_REGISTRY
KILN_TEST_REGISTRY_USER=$REGISTRY_USER
KILN_TEST_REGISTRY_PASSWORD=$REGISTRY_PASSWORD
KILN_TEST_STATE_DIR=$STATE_DIR
KILN_TEST_SCHEMATHESIS=$STATE_DIR/schemathesis/bin/st
KILN_TEST_POSTGRES_URL=$POSTGRES_URL
EOF
  if [[ $EMULATION != no ]]; then
    printf '%s\n' "KILN_TEST_ARM64_IMAGE=$ARM64_IMAGE" >>"$ENV_FILE.tmp"
  fi
  mv "$ENV_FILE.tmp" "$ENV_FILE"
}

# --- main ---------------------------------------------------------------------------------

mode=up
case "${1:-}" in
  "") ;;
  --verify) mode=verify ;;
  --stop) mode=stop ;;
  -h | --help)
    usage
    exit 0
    ;;
  *)
    usage >&2
    exit 2
    ;;
esac
[[ $(id -u) == 0 ]] || die "run as root"
mkdir -p "$STATE_DIR"
# One run at a time (tests may call this concurrently).
exec 9>"$STATE_DIR/lock"
flock 9

if [[ $mode == stop ]]; then
  rm -f "$ENV_FILE" "$STATE_DIR/verified"
  # Each takes a second or few to exit; stop them side by side.
  stop_one registry-5001 docker-registry 10 &
  stop_one registry-5000 docker-registry 10 &
  stop_postgres &
  if stop_one dockerd dockerd 40; then
    remove_egress_guard
  else
    log "dockerd was not started by this script; left alone"
  fi
  wait
  exit 0
fi

install_packages
install_schemathesis
start_dockerd
build_image
build_docker_image
if [[ $EMULATION != no ]]; then
  ensure_binfmt
  build_arm64_image
fi
auth_changed=no
ensure_htpasswd && auth_changed=yes
start_registry "$REGISTRY" no no
start_registry "$AUTH_REGISTRY" yes "$auth_changed"
check_registries
start_postgres

# The slow checks (network probe, pushes, login) run once per set of running processes and
# image; a later run with the same ones skips them unless --verify.
stamp="$(cat "$STATE_DIR"/dockerd.pid "$STATE_DIR"/registry-500{0,1}.pid 2>/dev/null | tr '\n' ' ')"
stamp+="$(docker image inspect --format '{{.Id}}' "$IMAGE")"
if [[ $mode == verify || ! -f $STATE_DIR/verified || $(<"$STATE_DIR/verified") != "$stamp" ]]; then
  rm -f "$STATE_DIR/verified"
  verify_network
  verify_pushes
  echo "$stamp" >"$STATE_DIR/verified"
fi

write_env
log "ready; facts in $ENV_FILE:"
cat "$ENV_FILE"
