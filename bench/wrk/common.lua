-- Shared by the benchmark's wrk scripts (loaded with dofile): thread numbering, ULIDs, the
-- event template, and a JSON report of the run that bench/loadgen.py parses.

local CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
local threads = {}
local next_thread = 0

-- Number the threads (main state), so each can make ids no other thread makes.
function setup(thread)
   thread:set("thread_number", next_thread)
   next_thread = next_thread + 1
   table.insert(threads, thread)
end

-- `n` (an integer below 2^53) in `width` Crockford base32 digits, most significant first.
function base32(n, width)
   local digits = {}
   for i = width, 1, -1 do
      local d = n % 32
      digits[i] = CROCKFORD:sub(d + 1, d + 1)
      n = (n - d) / 32
   end
   return table.concat(digits)
end

-- A real ULID: 48 bits of milliseconds, then 80 bits of the caller's `tail` (16 base32 digits).
function ulid(ms, tail)
   return base32(ms, 10) .. tail
end

-- A text split at its @NAME@ placeholders: { parts = {...}, names = {...} }, rendered by `render`.
function load_template(path)
   local file = assert(io.open(path, "r"))
   local text = file:read("*a")
   file:close()
   local template = { parts = {}, names = {} }
   local position = 1
   for start, name, stop in text:gmatch("()@([A-Z_]+)@()") do
      table.insert(template.parts, text:sub(position, start - 1))
      table.insert(template.names, name)
      position = stop
   end
   table.insert(template.parts, text:sub(position))
   return template
end

function render(template, values)
   local out = {}
   for i, name in ipairs(template.names) do
      out[#out + 1] = template.parts[i]
      out[#out + 1] = values[name]
   end
   out[#out + 1] = template.parts[#template.parts]
   return table.concat(out)
end

-- Counters a script keeps per thread (global `counters`) are summed into the report.
counters = {}

function done(summary, latency, requests)
   local totals = {}
   for _, thread in ipairs(threads) do
      local theirs = thread:get("counters") or {}
      for name, value in pairs(theirs) do totals[name] = (totals[name] or 0) + value end
   end
   local extra = {}
   for name, value in pairs(totals) do extra[#extra + 1] = string.format('"%s":%d', name, value) end
   io.write(string.format(
      'WRK_REPORT {"requests":%d,"duration_us":%d,"bytes":%d,' ..
      '"errors":{"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d},' ..
      '"latency_us":{"mean":%.1f,"p50":%d,"p90":%d,"p99":%d,"max":%d},"counters":{%s}}\n',
      summary.requests, summary.duration, summary.bytes,
      summary.errors.connect, summary.errors.read, summary.errors.write, summary.errors.status, summary.errors.timeout,
      latency.mean, latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max,
      table.concat(extra, ",")))
end
