-- POST a new todo with every writable field set.
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = '{"title": "Posted by the benchmark", "description": "A todo from wrk",'
  .. ' "completed": false, "deadline_at": "2030-01-01T00:00:00Z"}'
