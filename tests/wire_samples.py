"""The shipped client's exact bodies, copied from CLIENT_WIRE_FORMAT.md (the ground truth)."""

USER = "9f86d081884c7d659a2feaa0c55ad015"

HEARTBEAT = (
    b'{"data":{"data":{"version":"v1.3.0","os":"darwin","arch":"arm64","user_id":"9f86d081884c7d659a2feaa0c55ad015",'
    b'"timestamp":"2026-11-27T09:15:02.123456789Z","metrics":{"total_deployments":42,"weekly_deployments":3,'
    b'"last_active_date":"2026-11-26","error_rate":0.07142857142857142}}},"type":"heartbeat"}'
)
CONFIG_CREATED = (
    b'{"data":{"data":{"config_type":"initial_setup","event":"config_created","timestamp":"2026-11-27T09:14:40.5Z",'
    b'"user_id":"9f86d081884c7d659a2feaa0c55ad015","version":"v1.3.0"}},"type":"config_created"}'
)
DEPLOYMENT = (
    b'{"data":{"data":{"event":"real_deployment","file_count":12,"os":"linux","success":false,'
    b'"timestamp":"2026-11-27T10:01:13.000000001Z","user_id":"9f86d081884c7d659a2feaa0c55ad015","version":"v1.3.0"}},'
    b'"type":"deployment"}'
)
HEADERS = {"Content-Type": "application/json", "User-Agent": "FlakeDrop/v1.3.0"}
