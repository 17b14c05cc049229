-- wrk script: POSTs $ST_BODY to $ST_PATH, rotating over the API keys in $ST_KEYS
-- (comma-separated, one per tenant), and prints one machine-readable BENCH line.
local keys = {}
for k in string.gmatch(os.getenv("ST_KEYS") or "", "[^,]+") do keys[#keys + 1] = k end
local path = os.getenv("ST_PATH")
local body = io.open(os.getenv("ST_BODY_FILE")):read("*a")
local counter = 0

request = function()
  counter = counter + 1
  local key = keys[(counter % #keys) + 1]
  return wrk.format("POST", path, { ["Authorization"] = "Bearer " .. key, ["Content-Type"] = "application/json" }, body)
end

done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    "BENCH requests=%d duration_s=%.3f socket_errors=%d non2xx=%d p50_ms=%.2f p99_ms=%.2f p999_ms=%.2f\n",
    summary.requests, summary.duration / 1e6, e.connect + e.read + e.write + e.timeout, e.status,
    latency:percentile(50) / 1000, latency:percentile(99) / 1000, latency:percentile(99.9) / 1000))
end
