#!/usr/bin/env bash
# Installs what the browser and feed tests and the status page benches need, only when
# it is missing (running it again changes nothing):
#
#   scripts/test-tools.sh chromium     # chromium + chromium-driver (tests/it/browser.rs)
#   scripts/test-tools.sh feedparser   # Python feedparser in target/pyenv (tests/it/feeds.rs)
#   scripts/test-tools.sh aiosmtpd     # Python aiosmtpd in target/pyenv (scripts/smtp-sink.py)
#   scripts/test-tools.sh wrk          # wrk (benches/status-load.sh)
#   scripts/test-tools.sh nginx        # nginx, the baseline of benches/status-load.sh
#   scripts/test-tools.sh sshd         # openssh-server (tests/it/hosts.rs starts its own sshd)
#   scripts/test-tools.sh ansible      # ansible-core in target/ansible-venv (benches/ssh.sh)
#   scripts/test-tools.sh all          # everything above
#
# Debian packages come from apt-get (with sudo unless root); feedparser and aiosmtpd from
# PyPI into a virtual environment under target/. Prints where each tool is; exits non-zero
# saying what failed.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
pyenv="${RUNBOOK_PYENV:-$root/target/pyenv}"

die() {
  echo "test-tools: error: $*" >&2
  exit 1
}

usage() {
  echo "usage: $0 chromium|feedparser|aiosmtpd|wrk|nginx|sshd|ansible|all ..." >&2
  exit 2
}

sudo_cmd=()
if [ "$(id -u)" -ne 0 ]; then
  command -v sudo >/dev/null 2>&1 ||
    die "not root and no sudo: install the packages by hand (apt-get install $*)"
  sudo_cmd=(sudo)
fi

apt_updated=0
# apt_install PKG... : installs the Debian packages given (all of them missing ones).
apt_install() {
  command -v apt-get >/dev/null 2>&1 || die "apt-get not found: install $* by hand"
  export DEBIAN_FRONTEND=noninteractive
  if [ "$apt_updated" -eq 0 ]; then
    echo "test-tools: apt-get update" >&2
    "${sudo_cmd[@]}" apt-get update -qq >&2 || die "apt-get update failed"
    apt_updated=1
  fi
  echo "test-tools: apt-get install $*" >&2
  "${sudo_cmd[@]}" apt-get install -y -qq --no-install-recommends "$@" >&2 ||
    die "apt-get install $* failed"
}

# Whether a Debian package is known to apt (after an update).
apt_has() {
  apt-cache show "$1" >/dev/null 2>&1
}

need_chromium() {
  local missing=()
  [ -x /usr/bin/chromium ] || missing+=(chromium)
  [ -x /usr/bin/chromedriver ] || missing+=(chromium-driver)
  if [ "${#missing[@]}" -gt 0 ]; then
    # Fonts so that text shows in screenshots.
    apt_install "${missing[@]}" fonts-dejavu-core
  fi
  [ -x /usr/bin/chromium ] || die "/usr/bin/chromium is still missing after install"
  [ -x /usr/bin/chromedriver ] || die "/usr/bin/chromedriver is still missing after install"
  echo "chromium: /usr/bin/chromium ($(/usr/bin/chromium --version 2>/dev/null || echo '?'))"
  echo "chromedriver: /usr/bin/chromedriver ($(/usr/bin/chromedriver --version 2>/dev/null | head -1 || echo '?'))"
}

need_wrk() {
  command -v wrk >/dev/null 2>&1 || apt_install wrk
  command -v wrk >/dev/null 2>&1 || die "wrk is still missing after install"
  echo "wrk: $(command -v wrk)"
}

nginx_bin() {
  if command -v nginx >/dev/null 2>&1; then
    command -v nginx
  elif [ -x /usr/sbin/nginx ]; then
    echo /usr/sbin/nginx
  else
    return 1
  fi
}

need_nginx() {
  if ! nginx_bin >/dev/null; then
    if [ "$apt_updated" -eq 0 ]; then
      "${sudo_cmd[@]}" apt-get update -qq >&2 || die "apt-get update failed"
      apt_updated=1
    fi
    if apt_has nginx-light; then
      apt_install nginx-light
    else
      apt_install nginx
    fi
  fi
  local bin
  bin="$(nginx_bin)" || die "nginx is still missing after install"
  echo "nginx: $bin ($("$bin" -v 2>&1 | head -1))"
}

need_sshd() {
  [ -x /usr/sbin/sshd ] || apt_install openssh-server
  [ -x /usr/sbin/sshd ] || die "/usr/sbin/sshd is still missing after install"
  command -v ssh >/dev/null 2>&1 || apt_install openssh-client
  command -v setsid >/dev/null 2>&1 || apt_install util-linux
  echo "sshd: /usr/sbin/sshd ($(/usr/sbin/sshd -V 2>&1 | head -1 || true))"
}

need_ansible() {
  local venv="${RUNBOOK_ANSIBLE_VENV:-$root/target/ansible-venv}"
  if [ ! -x "$venv/bin/ansible-playbook" ]; then
    command -v python3 >/dev/null 2>&1 || apt_install python3
    if [ ! -x "$venv/bin/python" ]; then
      rm -rf "$venv"
      python3 -m venv "$venv" >&2 || {
        rm -rf "$venv"
        apt_install python3-venv
        python3 -m venv "$venv" >&2 || die "python3 -m venv $venv failed"
      }
    fi
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check ansible-core >&2 ||
      die "pip install ansible-core into $venv failed"
  fi
  [ -x "$venv/bin/ansible-playbook" ] || die "ansible-playbook is missing in $venv after install"
  echo "ansible: $venv/bin/ansible-playbook ($("$venv/bin/ansible-playbook" --version 2>/dev/null | head -1))"
}

# Creates the virtual environment $pyenv when it has no python yet.
ensure_pyenv() {
  [ -x "$pyenv/bin/python" ] && return 0
  command -v python3 >/dev/null 2>&1 || apt_install python3
  rm -rf "$pyenv"
  if ! python3 -m venv "$pyenv" >&2; then
    # Debian's python3 needs python3-venv for ensurepip.
    rm -rf "$pyenv"
    apt_install python3-venv
    python3 -m venv "$pyenv" >&2 || die "python3 -m venv $pyenv failed"
  fi
}

# pip_need MODULE PACKAGE : installs PyPI PACKAGE into $pyenv unless MODULE imports there.
pip_need() {
  if ! "$pyenv/bin/python" -c "import $1" >/dev/null 2>&1; then
    ensure_pyenv
    "$pyenv/bin/python" -m pip install --quiet --disable-pip-version-check "$2" >&2 ||
      die "pip install $2 into $pyenv failed"
    "$pyenv/bin/python" -c "import $1" >/dev/null 2>&1 ||
      die "$1 does not import in $pyenv after install"
  fi
}

need_feedparser() {
  pip_need feedparser feedparser
  echo "feedparser: $pyenv/bin/python ($("$pyenv/bin/python" -c 'import feedparser; print(feedparser.__version__)'))"
}

# aiosmtpd backs scripts/smtp-sink.py (run it with $pyenv/bin/python).
need_aiosmtpd() {
  pip_need aiosmtpd aiosmtpd
  echo "aiosmtpd: $pyenv/bin/python ($("$pyenv/bin/python" -c 'import aiosmtpd; print(aiosmtpd.__version__)'))"
}

[ "$#" -gt 0 ] || usage
for tool in "$@"; do
  case "$tool" in
    chromium) need_chromium ;;
    feedparser) need_feedparser ;;
    aiosmtpd) need_aiosmtpd ;;
    wrk) need_wrk ;;
    nginx) need_nginx ;;
    sshd) need_sshd ;;
    ansible) need_ansible ;;
    all)
      need_chromium
      need_feedparser
      need_aiosmtpd
      need_wrk
      need_nginx
      need_sshd
      ;;
    -h | --help) usage ;;
    *)
      echo "test-tools: unknown tool \`$tool\`" >&2
      usage
      ;;
  esac
done
