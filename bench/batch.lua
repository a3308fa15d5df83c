-- wrk script: batches of 100 events in the client's envelope, rotating users, OS and versions.
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
  for i = 1, 100 do
    counter = counter + 1
    local user = string.format("%032x", counter % 100000)
    parts[i] = '{"data":{"data":{"event":"real_deployment","file_count":3,"os":"' .. oses[counter % 3 + 1] ..
      '","success":' .. ((counter % 10 ~= 0) and "true" or "false") ..
      ',"timestamp":"2026-11-27T10:01:13.' .. string.format("%09d", counter % 1000000000) ..
      'Z","user_id":"' .. user .. '","version":"' .. versions[counter % 4 + 1] .. '"}},"type":"deployment"}'
  end
  return wrk.format(nil, "/v1/events", nil, "[" .. table.concat(parts, ",") .. "]")
end
