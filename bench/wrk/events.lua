-- POST /events with cancellations of runs never seen before: one event per request, or arrays of `batch`.
-- Arguments (after `--`): template file, nonce (6 base32 digits, new per wrk run), batch size,
-- number of functions, function id format, age spread and step (ms), bearer token.
-- Run ids are real ULIDs: the run's scheduling time, then nonce .. thread (2 digits) .. counter (8 digits).
local here = debug.getinfo(1, "S").source:match("^@(.*/)") or "./"
dofile(here .. "common.lua")

local template, run_nonce, batch, functions, function_format, age_spread, age_step
local number = 0

function init(args)
   template = load_template(args[1])
   run_nonce = args[2] .. base32(thread_number, 2)
   batch = tonumber(args[3])
   functions = tonumber(args[4])
   function_format = args[5]
   age_spread, age_step = tonumber(args[6]), tonumber(args[7])
   wrk.method = "POST"
   wrk.path = "/events"
   wrk.headers["Content-Type"] = "application/json"
   wrk.headers["Authorization"] = "Bearer " .. args[8]
   counters.events = 0
end

local function event(now_ms)
   local age = number * age_step % age_spread
   local scheduled = now_ms - age
   local values = {
      RUN_ID = ulid(scheduled, run_nonce .. base32(number, 8)),
      FUNCTION_ID = string.format(function_format, number % functions),
      TS = string.format("%d", now_ms),
      TRIGGER_TS = string.format("%d", scheduled),
   }
   number = number + 1
   return render(template, values)
end

function request()
   local now_ms = os.time() * 1000
   counters.events = counters.events + batch
   if batch == 1 then
      return wrk.format(nil, nil, nil, event(now_ms))
   end
   local events = {}
   for i = 1, batch do events[i] = event(now_ms) end
   return wrk.format(nil, nil, nil, "[" .. table.concat(events, ",") .. "]")
end
