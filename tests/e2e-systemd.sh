#!/usr/bin/env bash
# End-to-end test in a real systemd: a Debian bookworm root filesystem
# (debootstrap, cached under ~/.cache/sluice) booted with systemd-nspawn; the
# built .deb installed with apt; the unit driven with systemctl; a Kafka
# client (kcat) on the host talks to it over the shared loopback, and a real
# Prometheus on the host scrapes it while the dashboards' queries are checked.
# The .rpm is installed with rpm --root into a copy of the same tree.
# Needs root, debootstrap, systemd-container, kcat, prometheus, rpm,
# cargo-deb and cargo-generate-rpm (when it builds the packages itself).
# Usage: tests/e2e-systemd.sh   (builds the release binary and both packages)
set -euo pipefail

cache="${SLUICE_CACHE:-$HOME/.cache/sluice}"
rootfs_cache="$cache/rootfs-bookworm"
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
work="$(mktemp -d /tmp/sluice-e2e.XXXXXX)"
machine="sluice-e2e-$$"
init_pid=""
prom_pid=""
load_pid=""
started=$SECONDS

fail() { echo "e2e: FAIL: $*" >&2; exit 1; }
step() { echo "e2e: [$((SECONDS - started))s] $*"; }
in_ct() { nsenter -t "$init_pid" -a "$@"; }

cleanup() {
  for pid in $load_pid $prom_pid; do kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; done
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

# Runs "$@" with its output appended to $work/NAME.log; on failure shows the
# log's tail and fails the test as NAME.
logged() {
  local name=$1; shift
  "$@" >>"$work/$name.log" 2>&1 || { tail -20 "$work/$name.log"; fail "$name"; }
}
# apt-get inside the container, non-interactive: `apt_ct install /pkgs/x.deb`.
apt_ct() { logged "apt-$1" in_ct env DEBIAN_FRONTEND=noninteractive apt-get -y -qq "$@"; }

# journald may write a line a moment after the event: wait for it.
journal_has() { wait_for 15 sh -c "nsenter -t $init_pid -a journalctl -u sluice --no-pager | grep -q -- \"\$1\"" _ "$1"; }

step "building the .deb and the .rpm"
target="${CARGO_TARGET_DIR:-target}"
rm -rf "$target/debian" "$target/generate-rpm"
cargo build --release --bin sluiced
cargo deb -p sluice --no-build >/dev/null
deb="$(ls "$target"/debian/sluice_*.deb)"
# gzip payloads: the default zstd level takes half a minute per package here.
cargo generate-rpm -p daemon --payload-compress gzip
rpm="$(ls "$target"/generate-rpm/sluice-*.rpm)"
# The same rpm with a later release: what an rpm upgrade installs.
cargo generate-rpm -p daemon --payload-compress gzip -s 'release = "2"' -o "$work/sluice-next.rpm"

# The same package with a later version: what an upgrade installs.
mkdir -p "$work/pkgs"
cp "$deb" "$work/pkgs/sluice.deb"
dpkg-deb -R "$deb" "$work/deb-next"
sed -i 's/^Version: .*/&+next/' "$work/deb-next/DEBIAN/control"
dpkg-deb -b "$work/deb-next" "$work/pkgs/sluice-next.deb" >/dev/null

if [ ! -x "$rootfs_cache/usr/bin/systemctl" ]; then
  step "debootstrap bookworm into $rootfs_cache"
  mirror="$(awk '/^URIs:/{print $2; exit}' /etc/apt/sources.list.d/debian.sources)"
  mkdir -p "$cache"
  logged debootstrap debootstrap --variant=minbase --include=systemd,systemd-sysv,dbus,iproute2,ca-certificates,adduser \
    bookworm "$rootfs_cache.tmp" "$mirror"
  mv "$rootfs_cache.tmp" "$rootfs_cache"
fi

step "rpm -i --nodeps --root into a scratch root"
# A copy of the bookworm tree, so the scriptlets find a shell, groupadd and
# useradd. An upgrade keeps an edited spec; an erase keeps the data.
rroot="$work/rpmroot"
cp -a "$rootfs_cache" "$rroot"
logged rpm-install rpm --root "$rroot" -i --nodeps "$rpm"
listing="$(rpm --root "$rroot" -ql sluice)"
echo "$listing" | sed 's/^/e2e:   rpm: /'
for f in /usr/bin/sluiced /etc/sluice/cluster.toml /usr/lib/systemd/system/sluice.service \
  /usr/share/doc/sluice/README.md /usr/share/doc/sluice/OPERATIONS.md \
  /usr/share/sluice/grafana/dashboards/sluice-overview.json /usr/share/sluice/prometheus/sluice-alerts.yml; do
  grep -qx "$f" <<<"$listing" || fail "the rpm lacks $f"
done
chroot "$rroot" id sluice >/dev/null || fail "rpm scriptlets made no sluice user"
[ "$(chroot "$rroot" stat -c %U:%a /var/lib/sluice)" = sluice:750 ] || fail "rpm: /var/lib/sluice not sluice-owned 0750"
chroot "$rroot" /usr/bin/sluiced check-config /etc/sluice/cluster.toml >/dev/null || fail "rpm: installed spec does not check"
echo "# edited by the operator" >>"$rroot/etc/sluice/cluster.toml"
touch "$rroot/var/lib/sluice/keep"
logged rpm-upgrade rpm --root "$rroot" -U --nodeps "$work/sluice-next.rpm"
[ "$(rpm --root "$rroot" -q --qf '%{RELEASE}' sluice)" = 2 ] || fail "rpm -U did not install release 2"
grep -q "edited by the operator" "$rroot/etc/sluice/cluster.toml" || fail "rpm upgrade replaced the edited spec"
logged rpm-erase rpm --root "$rroot" -e sluice
[ ! -e "$rroot/usr/bin/sluiced" ] || fail "rpm -e left the binary"
[ -e "$rroot/var/lib/sluice/keep" ] || fail "rpm -e removed the data"
rm -rf "$rroot"

step "booting the container"
cp -a "$rootfs_cache" "$work/root"
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
apt_ct install /pkgs/sluice.deb
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

step "a real Prometheus scrapes the daemon under load; every panel and alert evaluates"
prom_port="$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
printf 'global: {scrape_interval: 1s, evaluation_interval: 1s}\nscrape_configs:\n  - job_name: sluice\n    static_configs: [{targets: ["127.0.0.1:9644"]}]\n' \
  >"$work/prometheus.yml"
prometheus --config.file="$work/prometheus.yml" --storage.tsdb.path="$work/prometheus" \
  --web.listen-address="127.0.0.1:$prom_port" >"$work/prometheus.log" 2>&1 &
prom_pid=$!
prom="http://127.0.0.1:$prom_port"
# Bounded load: produce with acks=all, then read it back in a consumer group
# that commits (for the lag panels), until told to stop or 120 rounds.
load() {
  for _ in $(seq 1 120); do
    [ -e "$work/stop-load" ] && break
    seq 1 500 | sed 's/^/k:/' | kcat -b 127.0.0.1:9092 -P -t load -K: -X acks=all >/dev/null 2>&1 || true
    kcat -b 127.0.0.1:9092 -G e2e-dashboards load -o beginning -e -q >/dev/null 2>&1 || true
  done
}
load &
load_pid=$!
check_dashboards() { bash "$repo/grafana/check.sh" --prometheus "$prom" --require-data >"$work/check.log" 2>&1; }
if ! wait_for 90 check_dashboards; then
  cat "$work/check.log"
  tail -5 "$work/prometheus.log"
  fail "dashboards or alert rules against a real Prometheus"
fi
grep '^evaluated' "$work/check.log" | sed 's/^/e2e:   /'
touch "$work/stop-load"
wait "$load_pid" || true
load_pid=""
kill "$prom_pid" && wait "$prom_pid" 2>/dev/null || true
prom_pid=""

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

step "an upgrade keeps the edited spec and the data, and restarts the daemon"
old="$(in_ct systemctl show -p MainPID --value sluice)"
apt_ct install /pkgs/sluice-next.deb
in_ct dpkg-query -W -f='${Version}' sluice | grep -q '+next$' || fail "upgrade did not install the new version"
in_ct grep -q '^\[topics.added\]' /etc/sluice/cluster.toml || fail "upgrade replaced the edited spec"
[ "$(in_ct systemctl is-active sluice)" = active ] || fail "not active after the upgrade"
[ "$(in_ct systemctl show -p MainPID --value sluice)" != "$old" ] || fail "upgrade did not restart the daemon"
[ "$(kcat -b 127.0.0.1:9092 -C -t durable -o beginning -e -q | wc -l)" = 2000 ] || fail "messages lost over the upgrade"

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

step "remove keeps the spec and the data; purge removes them"
apt_ct remove sluice
in_ct test ! -e /usr/bin/sluiced || fail "remove left the binary"
in_ct grep -q '^\[topics.added\]' /etc/sluice/cluster.toml || fail "remove lost the edited spec"
in_ct test -d /var/lib/sluice/durable-0 || fail "remove lost the data"
apt_ct purge sluice
in_ct test ! -e /var/lib/sluice || fail "purge left /var/lib/sluice"
in_ct test ! -e /etc/sluice/cluster.toml || fail "purge left the spec"
if in_ct id sluice >/dev/null 2>&1; then fail "purge left the sluice user"; fi

step "PASS in $((SECONDS - started))s"
