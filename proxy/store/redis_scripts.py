"""The Lua scripts the Redis store runs: each is one atomic step on the server.

Every script names all its keys in ``KEYS`` (never builds a key name), so a
script's keys can be checked, and each script touches only keys of one
concept (one record and its kind's index, or the two signing-key hashes).
"""

from __future__ import annotations

# Last use only ever moves forward, even when two replicas write at once.
TOUCH = """
local current = redis.call('GET', KEYS[1])
if (not current) or tonumber(current) < tonumber(ARGV[1]) then
  if ARGV[2] == '' then
    redis.call('SET', KEYS[1], ARGV[1])
  else
    redis.call('SET', KEYS[1], ARGV[1], 'EXAT', ARGV[2])
  end
end
return 1
"""

# Signing keys: KEYS[1] maps kid -> the key's fixed JSON, KEYS[2] kid -> "retired_at usable_until".
# Active keys have no entry in KEYS[2].  The times travel as Python's repr of a float,
# untouched, so every backend gives back exactly what was written.
ADD_FIRST_SIGNING_KEY = """
for _, kid in ipairs(redis.call('HKEYS', KEYS[1])) do
  if redis.call('HEXISTS', KEYS[2], kid) == 0 then return 0 end
end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
return 1
"""
ROTATE_SIGNING_KEY = """
local at, usable_until = tonumber(ARGV[3]), tonumber(ARGV[4])
for _, kid in ipairs(redis.call('HKEYS', KEYS[1])) do
  local retired = redis.call('HGET', KEYS[2], kid)
  local ends = usable_until
  if retired then ends = tonumber(string.match(retired, ' (.+)$')) end
  if ends <= at then
    redis.call('HDEL', KEYS[1], kid)
    redis.call('HDEL', KEYS[2], kid)
  elseif not retired then
    redis.call('HSET', KEYS[2], kid, ARGV[3] .. ' ' .. ARGV[4])
  end
end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
return 1
"""

# Records: KEYS[1] holds "expires_at|value" (expires_at empty when none) and expires by
# itself; KEYS[2], a sorted set per kind, names the kind's keys scored by expiry so a
# kind can be listed without scanning the keyspace.  Index entries whose record has
# expired by the server's clock (the clock EXAT goes by) are dropped on every write.
PUT_RECORD = """
if ARGV[3] == '' then
  redis.call('SET', KEYS[1], ARGV[2])
else
  redis.call('SET', KEYS[1], ARGV[2], 'EXAT', ARGV[3])
end
redis.call('ZADD', KEYS[2], ARGV[4], ARGV[1])
local clock = redis.call('TIME')
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', '(' .. (tonumber(clock[1]) - 1))
return 1
"""
TAKE_RECORD = """
local value = redis.call('GET', KEYS[1])
if value then
  redis.call('DEL', KEYS[1])
  redis.call('ZREM', KEYS[2], ARGV[1])
end
return value
"""



# Put-if-absent: KEYS as for PUT_RECORD; ARGV[5] is the caller's clock.  A record whose
# own expiry has passed counts as absent even when EXAT (whole seconds) has not removed it yet.
ADD_RECORD = """
local current = redis.call('GET', KEYS[1])
if current then
  local expires = string.match(current, '^([^|]*)|')
  if expires == nil or expires == '' or tonumber(expires) > tonumber(ARGV[5]) then return 0 end
end
if ARGV[3] == '' then
  redis.call('SET', KEYS[1], ARGV[2])
else
  redis.call('SET', KEYS[1], ARGV[2], 'EXAT', ARGV[3])
end
redis.call('ZADD', KEYS[2], ARGV[4], ARGV[1])
return 1
"""
