# Sourced by the influxdb:1.8 image's init-influxdb.sh on the first start only (an empty
# /var/lib/influxdb), after it created INFLUXDB_DB, the admin and the users from
# INFLUXDB_WRITE_USER and INFLUXDB_READ_USER. $INFLUX_CMD runs one statement as the admin.

# The image grants the write user WRITE only. energymon's rollup jobs read the raw points they
# aggregate, so the pipeline's user gets ALL on that one database: read and write there,
# nothing elsewhere, no admin rights (no users, no databases). Grafana's user keeps READ.
if [ -n "${INFLUXDB_WRITE_USER:-}" ] && [ -n "${INFLUXDB_DB:-}" ]; then
	$INFLUX_CMD "GRANT ALL ON \"$INFLUXDB_DB\" TO \"$INFLUXDB_WRITE_USER\""
fi

# Raw readings' retention policy (INFLUXDB_RAW_RETENTION, e.g. 90d): creating one takes the
# admin, which the pipeline's user is not. Changing it later: ALTER RETENTION POLICY as the
# admin (docs/deployment.md).
if [ -n "${INFLUXDB_RAW_RETENTION:-}" ] && [ -n "${INFLUXDB_DB:-}" ]; then
	$INFLUX_CMD "CREATE RETENTION POLICY \"energymon_raw\" ON \"$INFLUXDB_DB\" DURATION $INFLUXDB_RAW_RETENTION REPLICATION 1"
fi
