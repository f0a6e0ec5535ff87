-- Replays pre-signed requests from a file made by bench/workload.py: first line the path,
-- then one request a line, `<X-Inngest-Signature>\t<body>`. Thread k of n takes lines k, k+n, ...
-- A thread that used all its lines starts over (then the exporter sees duplicates): counted as `reused`.
-- Arguments (after `--`): the file, the number of wrk threads.
local here = debug.getinfo(1, "S").source:match("^@(.*/)") or "./"
dofile(here .. "common.lua")

local lines = {}
local position = 0

function init(args)
   local threads = tonumber(args[2])
   local file = assert(io.open(args[1], "r"))
   wrk.method = "POST"
   wrk.path = file:read("*l")
   local index = 0
   for line in file:lines() do
      if index % threads == thread_number then
         local tab = line:find("\t", 1, true)
         table.insert(lines, { line:sub(1, tab - 1), line:sub(tab + 1) })
      end
      index = index + 1
   end
   file:close()
   counters.reused = 0
end

function request()
   position = position + 1
   if position > #lines then
      counters.reused = counters.reused + 1
      position = 1
   end
   local signed = lines[position]
   -- headers given to wrk.format replace wrk.headers, so each request names all of its own
   local headers = {
      ["Content-Type"] = "application/json",
      ["X-Inngest-Server-Kind"] = "cloud",
      ["X-Inngest-Signature"] = signed[1],
   }
   return wrk.format(nil, nil, headers, signed[2])
end
