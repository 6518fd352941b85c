# $1 = 0 on erase (not upgrade): remove the unit from systemd's view. Data in
# /var/lib/sluice is kept; remove it by hand once it is no longer needed.
if [ "$1" = 0 ]; then
  systemctl daemon-reload >/dev/null 2>&1 || true
fi
exit 0
