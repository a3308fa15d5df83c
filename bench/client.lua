-- wrk script: the shipped client's exact deployment bytes, rotating users; each user (an install)
-- keeps one OS and version, and stamps events with the current time, as the real client does.
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
  wrk.headers["User-Agent"] = "FlakeDrop/v1.3.0"
end

function request()
  counter = counter + 1
  local n = counter % 100000 + tonumber(tid or 0) * 1000003
  local success = (counter % 10 ~= 0) and "true" or "false"
  local body = '{"data":{"data":{"event":"real_deployment","file_count":12,"os":"' .. oses[n % 3 + 1] ..
    '","success":' .. success .. ',"timestamp":"' .. os.date("!%Y-%m-%dT%H:%M:%S", os.time()) .. '.' ..
    string.format("%09d", counter % 1000000000) .. 'Z","user_id":"' .. string.format("%032x", n) ..
    '","version":"' .. versions[n % 4 + 1] .. '"}},"type":"deployment"}'
  return wrk.format(nil, "/v1/events", nil, body)
end
