getent group sluice >/dev/null || groupadd --system sluice
getent passwd sluice >/dev/null || useradd --system --gid sluice --home-dir /var/lib/sluice \
  --no-create-home --shell /sbin/nologin --comment "Sluice commit log" sluice
exit 0
