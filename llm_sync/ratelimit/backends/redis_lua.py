"""The Lua scripts of the Redis backend: ``state.ScopeState``'s maths, run
atomically on the Redis server.

``state.py`` is the reference for what each operation means; this is a
line-by-line port of it (and of ``bucket.TokenBucket``), and
``tests/ratelimit/test_redis_backend.py`` runs the same operation sequences
on both and compares the buckets. Time is the server's ``TIME`` (one clock
for every host), unless a test passes ``now``.

Storage: one hash per scope. ``dims`` lists its buckets in order; bucket
``d`` keeps ``d:l`` (limit per minute), ``d:c`` (capacity), ``d:v``
(level), ``d:u`` (updated at), ``d:k`` (configured limit, or empty);
``burst`` and ``pause`` (paused until) are the scope's. Every script gets
each scope's configured limits and burst, so a scope that expired while
idle is made again, full, as ``declare`` makes it.

Numbers cross the boundary as strings (``%.17g``: Lua would truncate a
number returned as a Redis reply); an empty string is "none".
"""

from __future__ import annotations

__all__ = ["PRELUDE", "ADMIT", "SETTLE", "SEED", "PAUSE", "SNAPSHOT", "SPEC_WIDTH", "DIMENSIONS"]

# Fixed order of dimensions in every argument list (as state.CONFIG_FIELDS).
DIMENSIONS = ("requests", "input_tokens", "output_tokens", "tokens")
# Per scope: burst seconds, then the configured limit of each dimension.
SPEC_WIDTH = 1 + len(DIMENSIONS)

PRELUDE = r"""
local DIMS = {'requests', 'input_tokens', 'output_tokens', 'tokens'}
local NO_WAIT = 1e-6
local MAX_DEBT_MINUTES = 2.0
local TOLERANCE = 0.97
local MIN_BURST_SECONDS = 2.0
local MIN_BURST = 1.0
local INF = math.huge

local function num(s)
  if s == nil or s == '' then return nil end
  return tonumber(s)
end

local function fmt(x)
  if x == INF then return 'inf' end
  if x == -INF then return '-inf' end
  return string.format('%.17g', x)
end

local function clock(arg)
  if arg ~= '' then return tonumber(arg) end
  local t = redis.call('TIME')
  return tonumber(t[1]) + tonumber(t[2]) / 1000000
end

-- TokenBucket ---------------------------------------------------------
local function capacity_of(limit, burst)
  if burst == nil then return limit end
  return limit / 60.0 * burst
end

local function new_bucket(per_minute, now, burst)
  local b = {limit = per_minute, rate = per_minute / 60.0}
  b.cap = capacity_of(per_minute, burst)
  b.level = b.cap
  b.upd = now
  return b
end

local function refill(b, now)
  if now > b.upd then
    b.level = math.min(b.cap, b.level + b.rate * (now - b.upd))
    b.upd = now
  end
end

local function available(b, now)
  refill(b, now)
  return b.level
end

local function wait_time(b, amount, now)
  refill(b, now)
  local needed = math.min(amount, b.cap)
  if b.level >= needed then return 0.0 end
  if b.rate <= 0 then return INF end
  return (needed - b.level) / b.rate
end

local function take(b, amount, now)
  refill(b, now)
  b.level = b.level - amount
end

local function give(b, amount, now)
  refill(b, now)
  b.level = math.min(b.cap, b.level + amount)
end

local function lower_to(b, level, now)
  refill(b, now)
  b.level = math.min(b.level, level)
end

local function set_limit(b, per_minute, now, burst)
  refill(b, now)
  local old = b.cap
  b.limit = per_minute
  b.rate = per_minute / 60.0
  b.cap = capacity_of(per_minute, burst)
  if old > 0 and b.level > 0 then b.level = b.level * b.cap / old end
  b.level = math.min(b.level, b.cap)
end

local function set_capacity(b, cap, now)
  refill(b, now)
  b.cap = math.max(0.0, cap)
  b.level = math.min(b.level, b.cap)
end

local function full_in(b, now)
  refill(b, now)
  if b.level >= b.cap then return 0.0 end
  if b.rate <= 0 then return INF end
  return (b.cap - b.level) / b.rate
end

-- ScopeState ------------------------------------------------------------
-- A scope's spec (burst, then each dimension's configured limit) from
-- ARGV[at..], or from its text form (``spec_text``) kept with an alias.
local function spec_at(at)
  local spec = {num(ARGV[at])}
  for i = 1, #DIMS do spec[i + 1] = num(ARGV[at + i]) end
  return spec
end

local function spec_text(at)
  local parts = {}
  for i = 0, #DIMS do table.insert(parts, ARGV[at + i] == '' and '-' or ARGV[at + i]) end
  return table.concat(parts, ',')
end

local function spec_parse(text)
  local spec, i = {}, 1
  for v in string.gmatch(text, '[^,]+') do
    spec[i] = (v ~= '-') and tonumber(v) or nil
    i = i + 1
  end
  return spec
end

-- Load the scope at ``key``; made from ``spec`` when missing.
local function load_spec(key, spec, now)
  local raw = redis.call('HGETALL', key)
  local s = {key = key, buckets = {}, order = {}, configured = {}, dirty = false}
  if #raw == 0 then
    s.burst = spec[1]
    s.pause = 0.0
    for i, d in ipairs(DIMS) do
      local v = spec[i + 1]
      if v ~= nil and v ~= 0 then
        s.configured[d] = v
        s.buckets[d] = new_bucket(v, now, s.burst)
        table.insert(s.order, d)
      end
    end
    s.dirty = true
    return s
  end
  local h = {}
  for i = 1, #raw, 2 do h[raw[i]] = raw[i + 1] end
  s.burst = num(h['burst'])
  s.pause = num(h['pause']) or 0.0
  -- A key whose organisation's scope is known (see SEED): its calls count there too.
  s.alias, s.alias_spec = h['alias'], h['alias_spec']
  -- A first waiter's claim on the scope (see ADMIT).
  s.claim, s.claim_until, s.claim_amounts = h['claim'], h['claim_until'], h['claim_amounts']
  for d in string.gmatch(h['dims'] or '', '[^,]+') do
    local b = {limit = tonumber(h[d .. ':l']), cap = tonumber(h[d .. ':c']),
               level = tonumber(h[d .. ':v']), upd = tonumber(h[d .. ':u'])}
    b.rate = b.limit / 60.0
    s.buckets[d] = b
    s.configured[d] = num(h[d .. ':k'])
    table.insert(s.order, d)
  end
  return s
end

local function load(key, at, now)
  return load_spec(key, spec_at(at), now)
end

local function save(s, now, idle_ms)
  local fields = {'dims', table.concat(s.order, ','), 'burst', s.burst and fmt(s.burst) or '',
                  'pause', fmt(s.pause)}
  for _, d in ipairs(s.order) do
    local b = s.buckets[d]
    local k = s.configured[d]
    table.insert(fields, d .. ':l'); table.insert(fields, fmt(b.limit))
    table.insert(fields, d .. ':c'); table.insert(fields, fmt(b.cap))
    table.insert(fields, d .. ':v'); table.insert(fields, fmt(b.level))
    table.insert(fields, d .. ':u'); table.insert(fields, fmt(b.upd))
    table.insert(fields, d .. ':k'); table.insert(fields, k and fmt(k) or '')
  end
  redis.call('HSET', s.key, unpack(fields))
  -- Idle scopes expire; a pause outlives the idle time if it must.
  local ttl = idle_ms + math.max(0, math.ceil((s.pause - now) * 1000))
  redis.call('PEXPIRE', s.key, ttl)
end

-- Amounts at ARGV[at..at+3] (empty: 0).
local function amounts_at(at)
  local a = {}
  for i, d in ipairs(DIMS) do a[d] = num(ARGV[at + i - 1]) or 0.0 end
  return a
end

local function oversize(s, amounts)
  for _, d in ipairs(DIMS) do  -- a fixed order, as state.ScopeState's
    local b = s.buckets[d]
    if b ~= nil then
      local cap = capacity_of(b.limit, s.burst)
      local amount = amounts[d] or 0.0
      if amount > cap then
        return string.format('%s (%.0f > %.0f)', (string.gsub(d, '_', ' ')), amount, cap)
      end
    end
  end
  return nil
end

-- The claim another process's first waiter holds on the scope, if live.
local function claim_of(s, now, claimant)
  if not s.claim or s.claim == claimant or tonumber(s.claim_until) <= now then return nil end
  local claimed, i = {}, 1
  for v in string.gmatch(s.claim_amounts, '[^,]+') do
    claimed[DIMS[i]] = tonumber(v)
    i = i + 1
  end
  return claimed
end

-- ``claimed``: what another process's first waiter is promised first.
local function quote(s, amounts, now, margin, claimed)
  local over = oversize(s, amounts)
  local wait = math.max(0.0, s.pause - now)
  local headroom = nil
  for _, d in ipairs(s.order) do
    local b = s.buckets[d]
    local amount = (amounts[d] or 0.0) + ((claimed and claimed[d]) or 0.0)
    wait = math.max(wait, wait_time(b, amount + b.rate * margin, now))
    if b.cap > 0 then
      local f = (available(b, now) - amount) / b.cap
      if headroom == nil or f < headroom then headroom = f end
    end
  end
  return wait, headroom or 1.0, over
end

local function adjust(s, delta, now)
  for _, d in ipairs(DIMS) do
    local b = s.buckets[d]
    local amount = delta[d]
    if b ~= nil and amount ~= nil and amount ~= 0 then
      if amount > 0 then
        local floor = math.min(available(b, now), -b.limit * MAX_DEBT_MINUTES)
        take(b, amount, now)
        b.level = math.max(b.level, floor)
      else
        give(b, -amount, now)
      end
    end
  end
end

local function learn_capacity(s, b, remaining, reset_in, now)
  if remaining == nil or remaining <= 0 then return end
  local full
  if s.burst == nil then full = b.limit else full = b.rate * s.burst end
  if reset_in == nil or reset_in <= NO_WAIT then
    local learned = math.min(full, remaining)
    if learned * TOLERANCE > b.cap then set_capacity(b, learned, now) end
    return
  end
  local floor = math.min(full, math.max(MIN_BURST, b.rate * MIN_BURST_SECONDS))
  local learned = math.min(full, math.max(floor, remaining + b.rate * reset_in))
  if learned < b.cap * TOLERANCE or learned * TOLERANCE > b.cap then set_capacity(b, learned, now) end
end

-- Observations at ARGV[at..]: per dimension limit, remaining, reset_in,
-- since, offset (an empty limit and remaining: nothing seen).
local function sync(s, at, now)
  for i, d in ipairs(DIMS) do
    local base = at + (i - 1) * 5
    local limit, remaining = num(ARGV[base]), num(ARGV[base + 1])
    local reset_in, since, offset = num(ARGV[base + 2]), num(ARGV[base + 3]), num(ARGV[base + 4])
    if since ~= nil then
      local b = s.buckets[d]
      if limit ~= nil and limit ~= 0 then
        local configured = s.configured[d]
        if b == nil then
          b = new_bucket(limit, now, s.burst)
          s.buckets[d] = b
          table.insert(s.order, d)
        elseif configured == nil and limit ~= b.limit then
          set_limit(b, limit, now, s.burst)
        elseif configured ~= nil and math.min(limit, configured) ~= b.limit then
          set_limit(b, math.min(limit, configured), now, s.burst)
        end
      end
      if b ~= nil and remaining ~= nil then
        if limit ~= nil and limit ~= 0 then learn_capacity(s, b, remaining, reset_in, now) end
        local bound = math.min(b.cap, remaining + b.rate * math.max(0.0, since)) - offset
        lower_to(b, bound, now)
      end
    end
  end
end
"""

# KEYS: scopes. ARGV: now, idle_ms, margin, take (0/1), claimant (empty:
# none), then per scope a spec (SPEC_WIDTH), amounts (4) and eligible (0/1).
# Returns the best index (-1: none), granted (0/1), aliased (0/1: the grant
# was charged to the scope's alias too), then per scope wait, headroom,
# oversize.
#
# Claims keep processes fair: a first-in-line caller (``claimant``) that
# must wait claims its best scope for what it needs, until it fits (plus
# CLAIM_GRACE); meanwhile other claimants' quotes leave that much aside, so
# a large call is not starved by a stream of small ones from elsewhere. A
# claimant's own claim ends when it is granted, or when the claim lapses.
ADMIT = PRELUDE + r"""
local CLAIM_GRACE, CLAIM_MAX = 2.0, 60.0
local now = clock(ARGV[1])
local idle_ms, margin, want, claimant = tonumber(ARGV[2]), tonumber(ARGV[3]), ARGV[4] == '1', ARGV[5]
local width = 5 + 4 + 1
local states, amounts, quotes = {}, {}, {}
local best, best_wait, best_room = -1, nil, nil
local loaded = {}  -- a key named twice (keys of one group) is one state
for i = 1, #KEYS do
  local at = 6 + (i - 1) * width
  local s = loaded[KEYS[i]]
  if s == nil then
    s = load(KEYS[i], at, now)
    s.claimed = claim_of(s, now, claimant)
    loaded[KEYS[i]] = s
  end
  if s.alias and s.aliased == nil then
    local t = loaded[s.alias]
    if t == nil then
      t = load_spec(s.alias, spec_parse(s.alias_spec), now)
      t.claimed = claim_of(t, now, claimant)
      loaded[s.alias] = t
    end
    s.aliased = t
  end
  local a = amounts_at(at + 5)
  local wait, headroom, over = quote(s, a, now, margin, s.claimed)
  if s.aliased then  -- it must fit the organisation's scope too
    local w2, h2, o2 = quote(s.aliased, a, now, margin, s.aliased.claimed)
    wait, headroom, over = math.max(wait, w2), math.min(headroom, h2), over or o2
  end
  states[i], amounts[i], quotes[i] = s, a, {wait, headroom, over}
  if over == nil and ARGV[at + 9] == '1' then
    if best == -1 or wait < best_wait or (wait == best_wait and headroom > best_room) then
      best, best_wait, best_room = i, wait, headroom
    end
  end
end
local granted, aliased = 0, 0
if want and best ~= -1 and best_wait <= NO_WAIT then
  local s, a = states[best], amounts[best]
  for _, d in ipairs(s.order) do take(s.buckets[d], a[d] or 0.0, now) end
  s.dirty = true
  if s.aliased then
    local t = s.aliased
    for _, d in ipairs(t.order) do take(t.buckets[d], a[d] or 0.0, now) end
    t.dirty = true
    aliased = 1
  end
  granted = 1
end
local out = {tostring(best == -1 and -1 or best - 1), tostring(granted), tostring(aliased)}
for _, s in pairs(loaded) do
  if s.dirty then save(s, now, idle_ms) end
end
for i = 1, #KEYS do
  local q = quotes[i]
  table.insert(out, fmt(q[1])); table.insert(out, fmt(q[2])); table.insert(out, q[3] or '')
end
if claimant ~= '' and want then
  for key, s in pairs(loaded) do
    if s.claimed == nil and s.claim == claimant then
      redis.call('HDEL', key, 'claim', 'claim_until', 'claim_amounts')  -- served, or waiting elsewhere now
    end
  end
  if granted == 0 and best ~= -1 and states[best].claimed == nil and best_wait < INF then
    local a, parts = amounts[best], {}
    for _, d in ipairs(DIMS) do table.insert(parts, fmt(a[d] or 0.0)) end
    redis.call('HSET', KEYS[best], 'claim', claimant,
               'claim_until', fmt(now + math.min(best_wait, CLAIM_MAX) + CLAIM_GRACE),
               'claim_amounts', table.concat(parts, ','))
  end
end
return out
"""

# KEYS[1]: the scope. ARGV: now, idle_ms, spec (SPEC_WIDTH), delta (4),
# observations (4 x 5), aliased (0/1). Correction first, then the header
# sync; a call admitted on the scope's alias too is corrected there too.
SETTLE = PRELUDE + r"""
local now = clock(ARGV[1])
local s = load(KEYS[1], 3, now)
local delta = amounts_at(3 + 5)
adjust(s, delta, now)
sync(s, 3 + 5 + 4, now)
save(s, now, tonumber(ARGV[2]))
if ARGV[3 + 5 + 4 + 20] == '1' and s.alias then  -- admitted on the alias too: corrected there too
  local t = load_spec(s.alias, spec_parse(s.alias_spec), now)
  adjust(t, delta, now)
  save(t, now, tonumber(ARGV[2]))
end
return 1
"""

# KEYS: the new scope, the old. ARGV: now, idle_ms, new spec, old spec,
# allowance (4). The new scope is left no fuller than the old plus the
# allowance, bucket by bucket: any number of processes may do it, in any
# order, and a call is never counted twice (see RateLimitBackend.seed).
# The old scope then names the new as its alias: a call admitted on the old
# one (by a process that has not moved yet) must fit, and is charged, on
# both.
SEED = PRELUDE + r"""
local now = clock(ARGV[1])
local new = load(KEYS[1], 3, now)
local old = load(KEYS[2], 3 + 5, now)
local allowance = amounts_at(3 + 10)
for _, d in ipairs(new.order) do
  local b, o = new.buckets[d], old.buckets[d]
  if o ~= nil then lower_to(b, available(o, now) + allowance[d], now) end
end
save(new, now, tonumber(ARGV[2]))
-- Processes that have not learned the organisation yet still charge the
-- key's own scope: from now on those charges count on the new one too.
save(old, now, tonumber(ARGV[2]))
redis.call('HSET', KEYS[2], 'alias', KEYS[1], 'alias_spec', spec_text(3))
return 1
"""

# KEYS[1]: the scope. ARGV: now, idle_ms, spec, seconds.
PAUSE = PRELUDE + r"""
local now = clock(ARGV[1])
local s = load(KEYS[1], 3, now)
s.pause = math.max(s.pause, now + math.max(0.0, tonumber(ARGV[3 + 5])))
save(s, now, tonumber(ARGV[2]))
return 1
"""

# KEYS: scopes. ARGV: now, idle_ms, then per scope a spec. Returns per
# scope: paused_for, bucket count, then per bucket name, limit, capacity,
# level, full_in, configured (0/1).
SNAPSHOT = PRELUDE + r"""
local now = clock(ARGV[1])
local out = {}
for i = 1, #KEYS do
  local s = load(KEYS[i], 3 + (i - 1) * 5, now)
  if s.dirty then save(s, now, tonumber(ARGV[2])) end  -- expired: made again
  table.insert(out, fmt(math.max(0.0, s.pause - now)))
  table.insert(out, tostring(#s.order))
  for _, d in ipairs(s.order) do
    local b = s.buckets[d]
    local level = available(b, now)
    table.insert(out, d); table.insert(out, fmt(b.limit)); table.insert(out, fmt(b.cap))
    table.insert(out, fmt(level)); table.insert(out, fmt(full_in(b, now)))
    table.insert(out, s.configured[d] and '1' or '0')
  end
end
return out
"""
