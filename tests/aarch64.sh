#!/usr/bin/env bash
# Run the device-profile tests (tests/device) on aarch64 under qemu user-mode emulation: evidence
# that the agent's training path (stock onnxruntime, no torch) works on a 64-bit Raspberry Pi
# or Jetson. `make test-aarch64` exports the bundles in the coordinator profile (.venv) and runs
# this script; it can also run alone once build/device-bundles exists.
#
# What it does, on a Debian (bookworm) x86_64 host:
#   1. installs what is missing with apt-get: debootstrap, and qemu-user-static from
#      bookworm-backports (bookworm's own qemu 7.2 crashes on onnxruntime under emulation);
#   2. registers qemu-aarch64 with binfmt_misc (by hand: no systemd in containers and VMs);
#   3. makes an arm64 bookworm rootfs with debootstrap in build/aarch64-root, once (cached);
#   4. copies the source tree and the exported bundles into it, mounts /proc and /sys;
#   5. in the chroot: a venv with `pip install -e ".[agent]" pytest` (aarch64 wheels, no torch;
#      cached until pyproject.toml changes), then `python -m pytest -q tests/device` with
#      GENOFED_DEVICE_BUNDLES and GENOFED_DEVICE_PROFILE=1, as `make test-device` does.
# Needs root, or sudo (apt-get, mount, chroot).
#
# The emulated CPU is a Cortex-A72, the Raspberry Pi 4's core (ARMv8.0-A: NEON, no SVE, no
# dot product), so onnxruntime picks the kernels a Pi would run. QEMU_CPU overrides it (qemu's
# `-cpu help`: cortex-a76 is the Pi 5's, max has every feature). With max, qemu's /proc/cpuinfo
# says "CPU implementer : 0x00" and onnxruntime warns on stderr "Unknown CPU vendor", which
# test_genofed_train_runs_offline_and_resumes counts as an extra line of error output.
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
ROOT=${AARCH64_ROOT:-$REPO/build/aarch64-root}
BUNDLES=${GENOFED_DEVICE_BUNDLES:-$REPO/build/device-bundles}
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
SUITE=bookworm
VENV=/opt/genofed-venv            # inside the chroot
SUDO=$([ "$(id -u)" = 0 ] || echo sudo)
BINFMT=/proc/sys/fs/binfmt_misc
QEMU_CPU=${QEMU_CPU:-cortex-a72}   # read by qemu-user from the environment of every process

log() { printf '== aarch64: %s\n' "$*" >&2; }
apt_install() {   # as the Makefile's system-deps; env: sudo drops DEBIAN_FRONTEND
  $SUDO apt-get update -qq
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@"
}

# --- 1. host packages -------------------------------------------------------------------------
# qemu >= 8 is needed (7.2 dies on onnxruntime); bookworm has it only in backports.
qemu_major() {
  local q
  q=$(command -v qemu-aarch64-static || command -v qemu-aarch64) || { echo 0; return; }
  "$q" --version | sed -n '1s/.*version \([0-9]*\).*/\1/p'
}
installed_qemu=0
missing=""
command -v debootstrap >/dev/null || missing="debootstrap"
if [ -n "$missing" ]; then
  log "installing with apt-get: $missing"
  apt_install $missing
fi
if [ "$(qemu_major)" -lt 8 ]; then
  codename=$(. /etc/os-release && echo "${VERSION_CODENAME:-}")
  if [ "$codename" = bookworm ]; then
    if ! grep -rqs "^[^#]*bookworm-backports" /etc/apt/sources.list /etc/apt/sources.list.d/; then
      log "adding bookworm-backports to the apt sources"
      echo "deb $MIRROR bookworm-backports main" |
        $SUDO tee /etc/apt/sources.list.d/bookworm-backports.list >/dev/null
    fi
    log "installing qemu-user-static from bookworm-backports"
    apt_install -t bookworm-backports qemu-user-static
  else
    log "installing qemu-user-static"
    apt_install qemu-user-static
  fi
  installed_qemu=1
  [ "$(qemu_major)" -ge 8 ] || { log "qemu >= 8 is needed, have $(qemu_major)"; exit 1; }
fi

# --- 2. binfmt_misc: run aarch64 ELF files through qemu ----------------------------------------
# The F (fix-binary) flag makes the kernel open the interpreter now, so the chroot needs no copy
# of qemu. A registration made before qemu was upgraded holds the old binary: redo it then.
if [ ! -e "$BINFMT/register" ]; then
  log "mounting binfmt_misc"
  $SUDO mount -t binfmt_misc binfmt_misc "$BINFMT"
fi
QEMU=$(command -v qemu-aarch64-static || command -v qemu-aarch64)
entry=$BINFMT/qemu-aarch64
if [ -e "$entry" ] && { [ "$installed_qemu" = 1 ] || ! grep -qx enabled "$entry" ||
                         ! grep -q '^flags:.*F' "$entry"; }; then
  log "removing the stale qemu-aarch64 binfmt registration"
  echo -1 | $SUDO tee "$entry" >/dev/null
fi
if [ ! -e "$entry" ]; then
  conf=/usr/lib/binfmt.d/qemu-aarch64.conf   # qemu-user-binfmt's line, in systemd's format
  if [ -r "$conf" ]; then
    line=$(grep -v '^#' "$conf" | head -1)
  else
    # qemu's scripts/qemu-binfmt-conf.sh: an ELF64 little-endian executable for EM_AARCH64
    magic='\x7fELF\x02\x01\x01\x00\x00\x00\x00\x00\x00\x00\x00\x00\x02\x00\xb7\x00'
    mask='\xff\xff\xff\xff\xff\xff\xff\x00\xff\xff\xff\xff\xff\xff\xff\xff\xfe\xff\xff\xff'
    line=":qemu-aarch64:M::$magic:$mask:$QEMU:F"
  fi
  case "${line##*:}" in *F*) ;; *) line="${line}F" ;; esac   # the last field: flags
  log "registering qemu-aarch64 with binfmt_misc (interpreter and flags: ${line#*:*:*:*:*:*:})"
  printf '%s' "$line" | $SUDO tee "$BINFMT/register" >/dev/null
fi

# --- 3. the arm64 rootfs, made once ------------------------------------------------------------
MOUNTS=()
cleanup() {
  local i
  for ((i = ${#MOUNTS[@]} - 1; i >= 0; i--)); do
    $SUDO umount "${MOUNTS[i]}" 2>/dev/null || $SUDO umount -l "${MOUNTS[i]}" || true
  done
  MOUNTS=()
}
trap cleanup EXIT
trap 'exit 130' INT TERM

mounted_under() { grep -q " $1/" /proc/mounts; }   # anything mounted inside the rootfs?

rootfs_ok() {
  [ -e "$ROOT/.genofed-rootfs-ok" ] &&
    $SUDO chroot "$ROOT" /usr/bin/python3 -c 'import ensurepip, venv' 2>/dev/null
}
if rootfs_ok; then
  log "reusing the rootfs in $ROOT"
else
  if [ -e "$ROOT" ]; then
    # never delete through a mount left behind by a killed run
    if mounted_under "$ROOT"; then log "something is still mounted under $ROOT"; exit 1; fi
    log "removing the incomplete rootfs in $ROOT"
    $SUDO rm -rf --one-file-system "$ROOT"
  fi
  mkdir -p "$(dirname "$ROOT")"
  log "debootstrap arm64 $SUITE into $ROOT (a few minutes under emulation)"
  $SUDO debootstrap --arch=arm64 --variant=minbase \
    --include=python3,python3-venv,ca-certificates "$SUITE" "$ROOT" "$MIRROR"
  $SUDO touch "$ROOT/.genofed-rootfs-ok"
fi

# --- 4. the sources, the bundles, the mounts ---------------------------------------------------
if [ ! -e "$BUNDLES/reference.json" ]; then
  log "no bundles in $BUNDLES: exporting them in the coordinator profile (.venv)"
  make -C "$REPO" .venv/.genofed-installed
  "$REPO/.venv/bin/python" "$REPO/tests/support/bundles.py" "$BUNDLES"
fi
# A copy of the repository without its environments, caches and build output (the repository
# root is the package `genofed`), and of the bundles: nothing of the host is bind-mounted.
$SUDO rm -rf --one-file-system "$ROOT/src" "$ROOT/bundles"
$SUDO mkdir -p "$ROOT/src"
tar -C "$REPO" --exclude-vcs --exclude='./.*' --exclude=./build --exclude=./demo-out \
  --exclude='*.egg-info' --exclude=__pycache__ --exclude=./benchmarks/results -cf - . |
  $SUDO tar -C "$ROOT/src" -xf -
$SUDO cp -a "$BUNDLES" "$ROOT/bundles"
$SUDO cp -L /etc/resolv.conf "$ROOT/etc/resolv.conf"   # pip needs DNS
# pip in the chroot trusts what the host trusts (a TLS-inspecting proxy's CA, say): the host's
# CA bundle, from PIP_CERT or the system's.
HOST_CA=${PIP_CERT:-${REQUESTS_CA_BUNDLE:-/etc/ssl/certs/ca-certificates.crt}}
$SUDO cp -L "$HOST_CA" "$ROOT/etc/ssl/certs/host-ca-bundle.crt"

if mounted_under "$ROOT"; then log "something is already mounted under $ROOT"; exit 1; fi
$SUDO mount -t proc proc "$ROOT/proc" && MOUNTS+=("$ROOT/proc")
$SUDO mount -t sysfs -o ro sysfs "$ROOT/sys" && MOUNTS+=("$ROOT/sys")

# Run a command in the chroot with a clean environment.
in_chroot() {
  $SUDO chroot "$ROOT" /usr/bin/env -i HOME=/root LANG=C.UTF-8 TMPDIR=/tmp \
    PATH="$VENV/bin:/usr/local/bin:/usr/bin:/bin" QEMU_CPU="$QEMU_CPU" \
    PIP_CERT=/etc/ssl/certs/host-ca-bundle.crt PIP_DISABLE_PIP_VERSION_CHECK=1 \
    ${PIP_INDEX_URL:+PIP_INDEX_URL="$PIP_INDEX_URL"} \
    ${http_proxy:+http_proxy="$http_proxy"} ${https_proxy:+https_proxy="$https_proxy"} \
    ${HTTP_PROXY:+HTTP_PROXY="$HTTP_PROXY"} ${HTTPS_PROXY:+HTTPS_PROXY="$HTTPS_PROXY"} \
    ${no_proxy:+no_proxy="$no_proxy"} ${NO_PROXY:+NO_PROXY="$NO_PROXY"} \
    GENOFED_DEVICE_BUNDLES=/bundles GENOFED_DEVICE_PROFILE=1 "$@"
}

# --- 5. the device venv and the tests ----------------------------------------------------------
# As .venv-device: an editable install of the agent extra; kept while pyproject.toml is the same.
want=$(sha256sum "$REPO/pyproject.toml" | cut -d' ' -f1)
have=$($SUDO cat "$ROOT$VENV/.genofed-installed" 2>/dev/null || true)
if [ "$want" != "$have" ]; then
  log "creating $VENV in the chroot: pip install -e \".[agent]\" pytest"
  $SUDO rm -rf --one-file-system "$ROOT$VENV"
  in_chroot /usr/bin/python3 -m venv "$VENV"
  in_chroot /bin/sh -c "cd /src && $VENV/bin/pip install -q -e '.[agent]' 'pytest>=8'"
  in_chroot "$VENV/bin/python" -c 'import importlib.util as u, sys
sys.exit(u.find_spec("torch") is not None)' || { log "torch got into the device venv"; exit 1; }
  echo "$want" | $SUDO tee "$ROOT$VENV/.genofed-installed" >/dev/null
else
  # the editable install reads /src, which was just copied afresh
  log "reusing $VENV in the chroot"
fi

log "running tests/device in the chroot (QEMU_CPU=$QEMU_CPU)"
in_chroot /bin/sh -c 'cd /src && uname -m &&
  grep -m2 -E "^CPU (implementer|part)" /proc/cpuinfo | tr -s "\t " " " | paste -sd" " &&
  python -c "import platform, onnxruntime; print(platform.machine(), onnxruntime.__version__)" &&
  python -c "import numpy, pysam, nacl
print(\"numpy\", numpy.__version__, \"pysam\", pysam.__version__, \"pynacl\", nacl.__version__)" &&
  exec python -m pytest -q -p no:cacheprovider tests/device'
