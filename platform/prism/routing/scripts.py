"""The Lua scripts of the prefix index; each runs atomically in one round trip.

Times come from Redis's own clock (``TIME``), so routers and replicas on hosts whose clocks
differ agree on what has expired.
"""

from __future__ import annotations

# Leading run of held blocks per replica.
# KEYS: live, then (blocks, predicted) per replica.  ARGV: replica count, replica ids, hashes.
# Returns one integer per replica: -1 if it has no live heartbeat, else how many of the
# leading hashes it holds (cached by its engine or predicted and not yet expired).
MATCH = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local count = tonumber(ARGV[1])
local first_hash = count + 2
local total = #ARGV - first_hash + 1
local chunk = 512
local result = {}
for i = 1, count do
  local expiry = redis.call('ZSCORE', KEYS[1], ARGV[1 + i])
  if (not expiry) or tonumber(expiry) < now then
    result[i] = -1
  else
    local run = 0
    local blocks = KEYS[2 * i]
    local predicted = KEYS[2 * i + 1]
    local from = 0
    local going = true
    while going and from < total do
      local upto = math.min(from + chunk, total)
      local batch = {}
      for j = from + 1, upto do batch[#batch + 1] = ARGV[first_hash + j - 1] end
      local held = redis.call('SMISMEMBER', blocks, unpack(batch))
      local until_when = redis.call('ZMSCORE', predicted, unpack(batch))
      for j = 1, #batch do
        local expires = until_when[j]
        if held[j] == 1 or (expires and tonumber(expires) >= now) then
          run = run + 1
        else
          going = false
          break
        end
      end
      from = upto
    end
    result[i] = run
  end
end
return result
"""

# Record hashes as predicted on one replica for ARGV[1] seconds.
# KEYS: predicted.  ARGV: ttl seconds, hashes.
PREDICT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local expiry = now + tonumber(ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
local chunk = 512
for from = 2, #ARGV, chunk do
  local args = {}
  for j = from, math.min(from + chunk - 1, #ARGV) do
    args[#args + 1] = expiry
    args[#args + 1] = ARGV[j]
  end
  redis.call('ZADD', KEYS[1], unpack(args))
end
redis.call('PEXPIRE', KEYS[1], math.ceil(tonumber(ARGV[1]) * 1000))
return 1
"""

# A replica's heartbeat. KEYS: live, blocks.  ARGV: replica id, ttl seconds.
# Extends the replica's liveness and its block set's expiry, drops expired replicas from
# the live set, and returns 1 if the replica was still live, 0 if its entry had expired or
# vanished (Redis restarted or was flushed): then its blocks must be published again.
HEARTBEAT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local ttl = tonumber(ARGV[2])
local previous = redis.call('ZSCORE', KEYS[1], ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
redis.call('ZADD', KEYS[1], now + ttl, ARGV[1])
redis.call('PEXPIRE', KEYS[2], math.ceil(ttl * 1000))
if previous and tonumber(previous) >= now then return 1 end
return 0
"""
