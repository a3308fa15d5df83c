-- wrk script: batches of 100 events in the client's envelope from 100k users; each user keeps one OS
-- and version, and events carry the current time.
local counter = 0
local oses = {"darwin", "linux", "windows"}
local versions = {"v1.1.0", "v1.2.0", "v1.3.0", "v1.3.5"}
local thread_id = 0

function setup(thread)
  thread:set("tid", thread_id)
  thread_id = thread_id + 1
end

function init(args)
  counter = tonumber(tid or 0) * 100000000
  wrk.method = "POST"
  wrk.headers["Content-Type"] = "application/json"
end

function request()
  local parts = {}
  local now = os.date("!%Y-%m-%dT%H:%M:%S", os.time())
  for i = 1, 100 do
    counter = counter + 1
    local n = counter % 100000
    parts[i] = '{"data":{"data":{"event":"real_deployment","file_count":3,"os":"' .. oses[n % 3 + 1] ..
      '","success":' .. ((counter % 10 ~= 0) and "true" or "false") ..
      ',"timestamp":"' .. now .. '.' .. string.format("%09d", counter % 1000000000) ..
      'Z","user_id":"' .. string.format("%032x", n) .. '","version":"' .. versions[n % 4 + 1] ..
      '"}},"type":"deployment"}'
  end
  return wrk.format(nil, "/v1/events", nil, "[" .. table.concat(parts, ",") .. "]")
end
