install -d -o sluice -g sluice -m 0750 /var/lib/sluice
chown root:sluice /etc/sluice /etc/sluice/cluster.toml
chmod 0750 /etc/sluice
chmod 0640 /etc/sluice/cluster.toml
systemctl daemon-reload >/dev/null 2>&1 || true
exit 0
