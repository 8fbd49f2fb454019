package fleet

import "github.com/redis/go-redis/v9"

// The scripts run atomically in Redis, on Redis's clock, so that replicas
// whose clocks differ still agree on when leases expire. Times are in
// milliseconds.

// nowMS is the start of every script: Redis's time in milliseconds.
const nowMS = `
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
`

// acquireScript grants a lease, or queues the waiter.
// KEYS: leases (zset id→expiry), queue (zset ticket→number), alive (zset
// ticket→expiry), seq (counter), learned (hash limit, at).
// ARGV: limit (0: none), ticket ("" for none), queue ("1" or "0"), lease
// id, lease TTL, wait TTL, recover-every, key TTL.
// Returns {granted, in use, limit in force, ahead, ticket}.
var acquireScript = redis.NewScript(nowMS + `
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
for _, dead in ipairs(redis.call('ZRANGEBYSCORE', KEYS[3], '-inf', now)) do
  redis.call('ZREM', KEYS[2], dead)
  redis.call('ZREM', KEYS[3], dead)
end
local limit = tonumber(ARGV[1])
local learned = redis.call('HMGET', KEYS[5], 'limit', 'at')
if learned[1] then
  local l = tonumber(learned[1]) + math.floor((now - tonumber(learned[2])) / tonumber(ARGV[7]))
  if limit == 0 or l < limit then limit = l end
end
local used = redis.call('ZCARD', KEYS[1])
local ticket = ARGV[2]
local ahead = false
if ticket ~= '' then ahead = redis.call('ZRANK', KEYS[2], ticket) end
if not ahead then
  ticket = ''
  ahead = redis.call('ZCARD', KEYS[2])
end
local ttl = tonumber(ARGV[8])
if limit == 0 or used + ahead < limit then
  redis.call('ZADD', KEYS[1], now + tonumber(ARGV[5]), ARGV[4])
  redis.call('PEXPIRE', KEYS[1], ttl)
  if ticket ~= '' then
    redis.call('ZREM', KEYS[2], ticket)
    redis.call('ZREM', KEYS[3], ticket)
  end
  return {1, used + 1, limit, ahead, ''}
end
if ARGV[3] ~= '1' then
  return {0, used, limit, ahead, ''}
end
if ticket == '' then
  ticket = tostring(redis.call('INCR', KEYS[4]))
  redis.call('ZADD', KEYS[2], tonumber(ticket), ticket)
end
redis.call('ZADD', KEYS[3], now + tonumber(ARGV[6]), ticket)
for i = 2, 4 do redis.call('PEXPIRE', KEYS[i], ttl) end
return {0, used, limit, ahead, ticket}
`)

// releaseScript ends a lease, or a waiter's place, and wakes the fleet's
// waiters, if the key has any.
// KEYS: leases, queue, alive. ARGV: the lease id or "", the ticket or "",
// the channel, the key.
var releaseScript = redis.NewScript(`
if ARGV[1] ~= '' then redis.call('ZREM', KEYS[1], ARGV[1]) end
if ARGV[2] ~= '' then
  redis.call('ZREM', KEYS[2], ARGV[2])
  redis.call('ZREM', KEYS[3], ARGV[2])
end
if redis.call('ZCARD', KEYS[2]) > 0 then
  redis.call('PUBLISH', ARGV[3], ARGV[4])
end
return 0
`)

// refusedScript learns a lower limit after a refusal.
// KEYS: leases, learned. ARGV: recover-every, learn-for.
// Returns the limit now in force.
var refusedScript = redis.NewScript(nowMS + `
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
local used = redis.call('ZCARD', KEYS[1])
local limit = math.max(1, used - 1)
local learned = redis.call('HMGET', KEYS[2], 'limit', 'at')
if learned[1] then
  local current = tonumber(learned[1]) + math.floor((now - tonumber(learned[2])) / tonumber(ARGV[1]))
  if current < limit then limit = current end
end
redis.call('HSET', KEYS[2], 'limit', limit, 'at', now)
redis.call('PEXPIRE', KEYS[2], tonumber(ARGV[2]))
return limit
`)

// renewScript extends a replica's leases and places in the queue of one key.
// KEYS: leases, alive, queue, seq. ARGV: lease TTL, wait TTL, key TTL,
// number of leases, the lease ids, then the tickets.
// Returns how many leases were still there to renew.
var renewScript = redis.NewScript(nowMS + `
local n = tonumber(ARGV[4])
local renewed = 0
for i = 5, 4 + n do
  renewed = renewed + redis.call('ZADD', KEYS[1], 'XX', 'CH', now + tonumber(ARGV[1]), ARGV[i])
end
for i = 5 + n, #ARGV do
  redis.call('ZADD', KEYS[2], 'XX', now + tonumber(ARGV[2]), ARGV[i])
end
for i = 1, 4 do redis.call('PEXPIRE', KEYS[i], tonumber(ARGV[3])) end
return renewed
`)

// rateScript is GCRA.
// KEYS: the theoretical arrival time. ARGV: interval per unit, period,
// cost, force ("1" or "0").
// Returns {allowed, tat - now} (the latter as a string: Lua numbers would
// be truncated to integers).
var rateScript = redis.NewScript(nowMS + `
local interval = tonumber(ARGV[1])
local period = tonumber(ARGV[2])
local tat = tonumber(redis.call('GET', KEYS[1]) or now)
if tat < now then tat = now end
local nxt = tat + tonumber(ARGV[3]) * interval
local allowed = nxt - now <= period
if allowed or ARGV[4] == '1' then
  tat = nxt
  if tat > now then
    redis.call('SET', KEYS[1], tostring(tat), 'PX', math.ceil(tat - now))
  end
end
return {allowed and 1 or 0, tostring(tat - now), tostring(nxt - now)}
`)
