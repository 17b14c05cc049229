-- wrk script: POSTs the file $ST_BODY_FILE to $ST_PATH (or sends $ST_METHOD, e.g. GET with
-- no $ST_BODY_FILE), rotating over the API keys in $ST_KEYS
-- (comma-separated, one per tenant) or in the file $ST_KEYS_FILE (one key per line, the
-- last tab-separated field: `sealtrail keys create --tenants-from` output), and prints one
-- machine-readable BENCH line.
-- ST_ONCE=1: each key is used exactly once, split over the $ST_THREADS threads (as wrk's
-- -t); a thread whose keys are used up sends GET /healthz until wrk is stopped (SIGINT:
-- it then prints its summary).
local keys = {}
local file = os.getenv("ST_KEYS_FILE")
if file then
  for line in io.lines(file) do
    local k = line:match("([^\t]+)$")
    if k then keys[#keys + 1] = k end
  end
else
  for k in string.gmatch(os.getenv("ST_KEYS") or "", "[^,]+") do keys[#keys + 1] = k end
end
local path = os.getenv("ST_PATH")
local method = os.getenv("ST_METHOD") or "POST"
local body_file = os.getenv("ST_BODY_FILE")
local body = (body_file and body_file ~= "") and io.open(body_file):read("*a") or nil
local once = os.getenv("ST_ONCE") == "1"
local nthreads = tonumber(os.getenv("ST_THREADS") or "1")
local counter = 0
local next_tid = 0
local formatted = {}

setup = function(thread)
  thread:set("tid", next_tid)
  next_tid = next_tid + 1
end

request = function()
  counter = counter + 1
  if once then
    -- wrk calls request() once before a thread's first real request and drops the
    -- result: that call gets a /healthz, so no key is lost.
    if counter == 1 then
      return wrk.format("GET", "/healthz")
    end
    local i = (tid or 0) + 1 + (counter - 2) * nthreads
    if i > #keys then
      return wrk.format("GET", "/healthz")
    end
    return wrk.format(method, path, { ["Authorization"] = "Bearer " .. keys[i], ["Content-Type"] = "application/json" }, body)
  end
  -- Each key's request is formatted once (per thread) and then sent as is: formatting
  -- in Lua per request cost wrk a few microseconds of the CPU it shares with the server.
  local i = (counter % #keys) + 1
  local r = formatted[i]
  if not r then
    r = wrk.format(method, path, { ["Authorization"] = "Bearer " .. keys[i], ["Content-Type"] = "application/json" }, body)
    formatted[i] = r
  end
  return r
end

done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    "BENCH requests=%d duration_s=%.3f socket_errors=%d non2xx=%d p50_ms=%.2f p99_ms=%.2f p999_ms=%.2f\n",
    summary.requests, summary.duration / 1e6, e.connect + e.read + e.write + e.timeout, e.status,
    latency:percentile(50) / 1000, latency:percentile(99) / 1000, latency:percentile(99.9) / 1000))
end
