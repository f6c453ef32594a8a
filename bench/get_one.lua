-- GET one todo by a random id in 1..N (N is the first script argument).
-- Each thread gets a fixed seed, so every app sees the same id sequence.
local threads = 0

function setup(thread)
  threads = threads + 1
  thread:set("seed", threads)
end

function init(args)
  count = tonumber(args[1]) or 10000
  math.randomseed(seed)
end

function request()
  return wrk.format("GET", "/api/v1/todos/" .. math.random(count))
end
