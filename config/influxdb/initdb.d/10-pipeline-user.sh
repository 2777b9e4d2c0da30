# Sourced by the influxdb:1.8 image's init-influxdb.sh on the first start only (an empty
# /var/lib/influxdb), after it created INFLUXDB_DB, the admin and the users from
# INFLUXDB_WRITE_USER and INFLUXDB_READ_USER. $INFLUX_CMD runs one statement as the admin.

# What the pipeline's user needs, and no more: it WRITEs readings, health points and rollups,
# and it READs INFLUXDB_DB, because the rollup jobs SELECT the raw points they aggregate and,
# with INFLUXDB_RAW_RETENTION, the writer checks (SHOW RETENTION POLICIES) that the raw policy
# below exists. InfluxDB 1.x keeps one privilege per user and database, so READ and WRITE
# together can only be granted as ALL ON that database (a second GRANT replaces the first):
# read and write there, nothing on any other database, no admin rights (no users, no
# databases, no retention policies, no KILL QUERY). The image granted it WRITE only.
# Grafana's user keeps the image's READ: it cannot write.
if [ -n "${INFLUXDB_WRITE_USER:-}" ] && [ -n "${INFLUXDB_DB:-}" ]; then
	$INFLUX_CMD "GRANT ALL ON \"$INFLUXDB_DB\" TO \"$INFLUXDB_WRITE_USER\""
fi

# Raw readings' retention policy (INFLUXDB_RAW_RETENTION, e.g. 90d): creating one takes the
# admin, which the pipeline's user is not; the pipeline only checks that it exists with that
# duration. Changing it later: ALTER RETENTION POLICY as the admin (docs/deployment.md).
if [ -n "${INFLUXDB_RAW_RETENTION:-}" ] && [ -n "${INFLUXDB_DB:-}" ]; then
	$INFLUX_CMD "CREATE RETENTION POLICY \"energymon_raw\" ON \"$INFLUXDB_DB\" DURATION $INFLUXDB_RAW_RETENTION REPLICATION 1"
fi
