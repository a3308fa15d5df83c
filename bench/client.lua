-- wrk script: the shipped client's exact deployment bytes, rotating users, OS and versions.
local counter = 0
local oses = {"darwin", "linux", "windows"}
local versions = {"v1.1.0", "v1.2.0", "v1.3.0", "v1.3.5"}
local thread_id = 0
local threads = {}

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
  local user = string.format("%032x", counter % 100000 + tonumber(tid or 0) * 1000003)
  local os = oses[counter % 3 + 1]
  local version = versions[counter % 4 + 1]
  local success = (counter % 10 ~= 0) and "true" or "false"
  local body = '{"data":{"data":{"event":"real_deployment","file_count":12,"os":"' .. os ..
    '","success":' .. success .. ',"timestamp":"2026-11-27T10:01:13.' ..
    string.format("%09d", counter % 1000000000) .. 'Z","user_id":"' .. user ..
    '","version":"' .. version .. '"}},"type":"deployment"}'
  return wrk.format(nil, "/v1/events", nil, body)
end
