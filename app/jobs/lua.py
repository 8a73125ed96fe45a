"""The Lua scripts of the Redis job store: each runs atomically inside Redis, so counting a
batch, taking or renewing its lease and claiming expired leases never race between workers."""

RECORD_BATCH = """
-- KEYS: job hash, done-batches set, errors hash, warnings hash, batches hash, context sample,
--       deliveries hash, active-jobs set
-- ARGV: batch index, ok, failed, truncated, now, errors json, warnings json, ttl, job id,
--       chunks
if redis.call('EXISTS', KEYS[1]) == 0 then return -1 end
if redis.call('SADD', KEYS[2], ARGV[1]) == 0 then return 0 end
redis.call('HINCRBY', KEYS[1], 'succeeded', ARGV[2])
redis.call('HINCRBY', KEYS[1], 'failed', ARGV[3])
redis.call('HINCRBY', KEYS[1], 'truncated', ARGV[4])
redis.call('HINCRBY', KEYS[1], 'chunks', ARGV[10] or 0)
local errors = cjson.decode(ARGV[6])
for id, reason in pairs(errors) do redis.call('HSET', KEYS[3], id, reason) end
local warnings = cjson.decode(ARGV[7])
for id, reason in pairs(warnings) do redis.call('HSET', KEYS[4], id, reason) end
local done = redis.call('SCARD', KEYS[2])
local batches = tonumber(redis.call('HGET', KEYS[1], 'batches'))
local state = 'running'
local finished = done >= batches
if finished then
  local failed = tonumber(redis.call('HGET', KEYS[1], 'failed'))
  local total = tonumber(redis.call('HGET', KEYS[1], 'total'))
  if failed >= total then state = 'failed' elseif failed > 0 then state = 'done_with_errors' else state = 'done' end
  redis.call('HSET', KEYS[1], 'finished_at', ARGV[5])
end
local current = redis.call('HGET', KEYS[1], 'state')
if current == 'queued' or current == 'running' then redis.call('HSET', KEYS[1], 'state', state) end
redis.call('HSET', KEYS[1], 'updated_at', ARGV[5], 'activity_at', ARGV[5])
for i = 1, 4 do redis.call('EXPIRE', KEYS[i], ARGV[8]) end
if finished then
  -- the documents and the context sample are only needed while batches remain
  redis.call('DEL', KEYS[5], KEYS[6], KEYS[7])
  redis.call('SREM', KEYS[8], ARGV[9])
end
return 1
"""

BEGIN = """
-- KEYS: job hash, done set, deliveries hash, leases zset, lease owners hash, metrics hash
-- ARGV: batch index, lease member, lease expiry, token, max deliveries, now, ttl
-- returns {code, crashes}: -1 no such job, 0 nothing to do, 1 run it, 2 crashed too often
if redis.call('EXISTS', KEYS[1]) == 0 then return {-1, 0} end
local state = redis.call('HGET', KEYS[1], 'state')
if state ~= 'queued' and state ~= 'running' then return {0, 0} end
if redis.call('SISMEMBER', KEYS[2], ARGV[1]) == 1 then return {0, 0} end
local started = tonumber(redis.call('HGET', KEYS[3], 's' .. ARGV[1]) or '0')
local ended = tonumber(redis.call('HGET', KEYS[3], 'e' .. ARGV[1]) or '0')
local crashes = started - ended
if crashes < 0 then crashes = 0 end
if crashes >= tonumber(ARGV[5]) then return {2, crashes} end
if crashes > 0 then redis.call('HINCRBY', KEYS[6], 'redeliveries', 1) end
redis.call('HINCRBY', KEYS[3], 's' .. ARGV[1], 1)
redis.call('EXPIRE', KEYS[3], ARGV[7])
redis.call('ZADD', KEYS[4], ARGV[3], ARGV[2])
redis.call('HSET', KEYS[5], ARGV[2], ARGV[4])
redis.call('HSET', KEYS[1], 'activity_at', ARGV[6])
return {1, crashes}
"""

END = """
-- KEYS: deliveries hash, leases zset, lease owners hash
-- ARGV: batch index, lease member, token ('' = whoever holds it), keep-until (0 = drop), ttl
-- BEGIN made the deliveries hash; it is gone once the job finished (RECORD_BATCH drops it):
-- do not make it again for a job that no longer counts deliveries.
if redis.call('EXISTS', KEYS[1]) == 1 then
  redis.call('HINCRBY', KEYS[1], 'e' .. ARGV[1], 1)
  redis.call('EXPIRE', KEYS[1], ARGV[5])
end
local owner = redis.call('HGET', KEYS[3], ARGV[2])
if ARGV[3] == '' or owner == ARGV[3] then
  if tonumber(ARGV[4]) > 0 then
    redis.call('ZADD', KEYS[2], ARGV[4], ARGV[2])
  else
    redis.call('ZREM', KEYS[2], ARGV[2])
    redis.call('HDEL', KEYS[3], ARGV[2])
  end
end
return 1
"""

RENEW = """
-- KEYS: leases zset, lease owners hash, then one job hash per lease
-- ARGV: expiry, now, then member, token per lease
local renewed = 0
for i = 3, #KEYS do
  local member = ARGV[(i - 3) * 2 + 3]
  local token = ARGV[(i - 3) * 2 + 4]
  if redis.call('HGET', KEYS[2], member) == token then
    redis.call('ZADD', KEYS[1], 'XX', ARGV[1], member)
    redis.call('HSET', KEYS[i], 'activity_at', ARGV[2])
    renewed = renewed + 1
  end
end
return renewed
"""

CLAIM_EXPIRED = """
-- KEYS: leases zset, lease owners hash, metrics hash; ARGV: now
local expired = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1])
for _, member in ipairs(expired) do
  redis.call('ZREM', KEYS[1], member)
  redis.call('HDEL', KEYS[2], member)
end
if #expired > 0 then redis.call('HINCRBY', KEYS[3], 'expired_leases', #expired) end
return expired
"""

MARK_RUNNING = """
if redis.call('HGET', KEYS[1], 'state') == 'queued' then
  redis.call('HSET', KEYS[1], 'state', 'running', 'started_at', ARGV[1], 'updated_at', ARGV[1])
  return 1
end
return 0
"""

FAIL = """
-- KEYS: job hash, active-jobs set; ARGV: reason, now, job id
-- 1 when the job moved to failed, 0 when it had finished already (or does not exist)
local state = redis.call('HGET', KEYS[1], 'state')
if state ~= 'queued' and state ~= 'running' then return 0 end
redis.call('HSET', KEYS[1], 'state', 'failed', 'reason', ARGV[1], 'updated_at', ARGV[2],
           'finished_at', ARGV[2])
redis.call('SREM', KEYS[2], ARGV[3])
return 1
"""
