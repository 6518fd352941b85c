#!/usr/bin/env bash
# End-to-end test in a real systemd: a Debian bookworm root filesystem
# (debootstrap, cached under ~/.cache/sluice) booted with systemd-nspawn; the
# built .deb installed with apt; the unit driven with systemctl; a Kafka
# client (kcat) on the host talks to it over the shared loopback.
# Needs root, debootstrap, systemd-container, kcat, cargo-deb.
# Usage: tests/e2e-systemd.sh [path/to/sluice.deb]
set -euo pipefail

cache="${SLUICE_CACHE:-$HOME/.cache/sluice}"
rootfs_cache="$cache/rootfs-bookworm"
deb="${1:-}"
work="$(mktemp -d /tmp/sluice-e2e.XXXXXX)"
machine="sluice-e2e-$$"
init_pid=""
started=$SECONDS

fail() { echo "e2e: FAIL: $*" >&2; exit 1; }
step() { echo "e2e: [$((SECONDS - started))s] $*"; }
in_ct() { nsenter -t "$init_pid" -a "$@"; }

cleanup() {
  if [ -n "$init_pid" ]; then
    in_ct systemctl poweroff >/dev/null 2>&1 || true
    for _ in $(seq 1 50); do kill -0 "$init_pid" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$init_pid" 2>/dev/null || true
  fi
  rm -rf "$work"
}
trap cleanup EXIT

# Polls "$@" until it succeeds or $timeout seconds pass.
wait_for() {
  local timeout=$1; shift
  local deadline=$((SECONDS + timeout))
  until "$@" >/dev/null 2>&1; do
    [ $SECONDS -lt $deadline ] || return 1
    sleep 0.2
  done
}

# journald may write a line a moment after the event: wait for it.
journal_has() { wait_for 15 sh -c "nsenter -t $init_pid -a journalctl -u sluice --no-pager | grep -q -- \"\$1\"" _ "$1"; }

if [ -z "$deb" ]; then
  step "building the .deb"
  cargo build --release --bin sluiced
  cargo deb -p sluice --no-build
  deb="$(ls -t "${CARGO_TARGET_DIR:-target}"/debian/sluice_*.deb | head -1)"
fi
[ -f "$deb" ] || fail "no package at $deb"

if [ ! -x "$rootfs_cache/usr/bin/systemctl" ]; then
  step "debootstrap bookworm into $rootfs_cache"
  mirror="$(awk '/^URIs:/{print $2; exit}' /etc/apt/sources.list.d/debian.sources)"
  mkdir -p "$cache"
  debootstrap --variant=minbase --include=systemd,systemd-sysv,dbus,iproute2,ca-certificates,adduser \
    bookworm "$rootfs_cache.tmp" "$mirror" >"$work/debootstrap.log" 2>&1 || { tail -20 "$work/debootstrap.log"; fail "debootstrap"; }
  mv "$rootfs_cache.tmp" "$rootfs_cache"
fi

step "booting the container"
cp -a "$rootfs_cache" "$work/root"
mkdir -p "$work/pkgs" && cp "$deb" "$work/pkgs/"
systemd-nspawn -D "$work/root" -M "$machine" -b --register=no --keep-unit --console=pipe \
  --bind-ro="$work/pkgs:/pkgs" >"$work/nspawn.log" 2>&1 &
nspawn_pid=$!
find_init() {
  init_pid="$(ps -eo pid=,ppid=,comm= | awk -v p="$nspawn_pid" '
    $3=="systemd-nspawn" { n[$1]=1 } $3=="systemd" && n[$2] { print $1 }' | head -1)"
  [ -n "$init_pid" ]
}
wait_for 30 find_init || fail "container init not found"
running() { s="$(in_ct systemctl is-system-running 2>/dev/null || true)"; [ "$s" = running ] || [ "$s" = degraded ]; }
wait_for 60 running || fail "container did not boot"

step "apt install the package"
in_ct sh -c "DEBIAN_FRONTEND=noninteractive apt-get install -y -qq /pkgs/$(basename "$deb")" >"$work/apt.log" 2>&1 \
  || { tail -20 "$work/apt.log"; fail "apt install"; }
in_ct test -f /etc/sluice/cluster.toml || fail "conffile missing"
in_ct id sluice >/dev/null || fail "system user missing"

step "systemctl enable --now: active only after READY"
in_ct systemctl enable --now sluice
[ "$(in_ct systemctl is-active sluice)" = active ] || fail "not active after enable --now"
in_ct systemctl show -p StatusText --value sluice | grep -q "^serving" || fail "STATUS= does not say it is serving"

step "kcat round trip"
printf 'k1:one\nk2:two\nk3:three\n' | kcat -b 127.0.0.1:9092 -P -t e2e -K: -X acks=all
got="$(kcat -b 127.0.0.1:9092 -C -t e2e -o beginning -e -q -f '%k:%s\n')"
[ "$got" = "$(printf 'k1:one\nk2:two\nk3:three')" ] || fail "round trip returned: $got"

step "reload adds a topic"
in_ct sh -c 'printf "\n[topics.added]\npartitions = 3\n" >> /etc/sluice/cluster.toml'
in_ct systemctl reload sluice || fail "valid reload failed"
kcat -b 127.0.0.1:9092 -L | grep -q 'topic "added" with 3 partitions' || fail "added topic not in Metadata"

step "a broken spec makes reload fail, names file and line, and the daemon serves on"
in_ct sh -c 'printf "\n[topics.broken]\npartitions = 0\n" >> /etc/sluice/cluster.toml'
if in_ct systemctl reload sluice 2>/dev/null; then fail "reload of a broken spec succeeded"; fi
journal_has "/etc/sluice/cluster.toml:[0-9]*:14: topics.broken.partitions" || fail "journal does not name file, line and key"
in_ct sh -c 'sed -i "/topics.broken/,\$d" /etc/sluice/cluster.toml'
[ "$(kcat -b 127.0.0.1:9092 -C -t e2e -o beginning -e -q | wc -l)" = 3 ] || fail "not serving after a failed reload"

step "systemctl restart keeps every acknowledged message"
seq 1 2000 | sed 's/^/key:/' | kcat -b 127.0.0.1:9092 -P -t durable -K: -X acks=all
in_ct systemctl restart sluice
[ "$(kcat -b 127.0.0.1:9092 -C -t durable -o beginning -e -q | wc -l)" = 2000 ] || fail "messages lost over restart"

step "a daemon frozen with SIGSTOP is restarted by the watchdog"
old="$(in_ct systemctl show -p MainPID --value sluice)"
host_pid="$(pgrep -f '^/usr/bin/sluiced --config /etc/sluice/cluster.toml' | head -1)"
kill -STOP "$host_pid"
restarted() { n="$(in_ct systemctl show -p MainPID --value sluice)"; [ "$n" != "$old" ] && [ "$n" != 0 ] && [ "$(in_ct systemctl is-active sluice)" = active ]; }
wait_for 90 restarted || fail "watchdog did not restart the frozen daemon"
journal_has "Watchdog timeout" || fail "journal lacks the watchdog timeout"
[ "$(kcat -b 127.0.0.1:9092 -C -t durable -o beginning -e -q | wc -l)" = 2000 ] || fail "messages lost over the watchdog restart"

step "hardening score"
in_ct systemd-analyze security sluice --no-pager | tail -1

step "systemctl stop is clean"
in_ct systemctl stop sluice
[ "$(in_ct systemctl show -p Result --value sluice)" = success ] || fail "stop did not succeed"
journal_has 'event="stopped"' || fail "journal lacks the stop"

step "journalctl tells the story"
for event in starting recovered ready reload_action reload_done stopping stopped; do
  journal_has "event=\"$event\"" || fail "journal lacks event $event"
done

step "PASS in $((SECONDS - started))s"
