-- A plain GET (the URL's path) with the benchmark's JSON report: used for /healthz.
local here = debug.getinfo(1, "S").source:match("^@(.*/)") or "./"
dofile(here .. "common.lua")
