-- POST a todo, then DELETE it: each DELETE takes a todo its thread created and has not
-- deleted yet, so every one finds its todo; about half the requests are each.
local created = {}
local headers = {["Content-Type"] = "application/json"}
local body = '{"title": "Posted to be deleted", "completed": false}'

function request()
  local id = table.remove(created)
  if id then
    return wrk.format("DELETE", "/api/v1/todos/" .. id)
  end
  return wrk.format("POST", "/api/v1/todos", headers, body)
end

function response(status, headers, body)
  if status == 201 then
    table.insert(created, body:match('"id":%s*(%d+)'))
  end
end
