-- GET one todo by a random id in 1..N (N is the first script argument).
-- Each thread gets a fixed seed, so every app sees the same id sequence.
-- With BENCH_TOKEN in the environment, every request carries it as a bearer token (AUTH
-- token); it comes from there rather than the command line, which process lists show.
local threads = 0

function setup(thread)
  threads = threads + 1
  thread:set("seed", threads)
end

function init(args)
  count = tonumber(args[1]) or 10000
  math.randomseed(seed)
  local token = os.getenv("BENCH_TOKEN")
  if token then
    wrk.headers["Authorization"] = "Bearer " .. token
  end
end

function request()
  return wrk.format("GET", "/api/v1/todos/" .. math.random(count))
end
