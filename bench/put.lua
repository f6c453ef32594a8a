-- PUT a partial update to a random todo in 1..N (N is the first script argument).
-- Each thread gets a fixed seed, so every app sees the same id sequence.
local threads = 0
local body = '{"title": "Updated by the benchmark", "completed": true}'
local headers = {["Content-Type"] = "application/json"}

function setup(thread)
  threads = threads + 1
  thread:set("seed", threads)
end

function init(args)
  count = tonumber(args[1]) or 10000
  math.randomseed(seed)
end

function request()
  return wrk.format("PUT", "/api/v1/todos/" .. math.random(count), headers, body)
end
