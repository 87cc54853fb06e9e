"""The Lua scripts behind every multi-step update of the Redis backend.

A script runs atomically on the server: a caller cancelled after sending one
gets no answer, but the change happened whole; cancelled before sending, it
did not happen at all. Each script is loaded once per server and then run by
its SHA (``EVALSHA``), falling back to ``EVAL`` after a restart or failover
emptied the script cache.

Key layout (``P`` is the prefix, ``autobot:`` by default); ``docs/storage.md``
has the full table:

* ``P chats`` ZSET of chat ids scored by ``P clock`` at the last change
* ``P chat:<id>`` HASH id, title, created_at, updated_at
* ``P chat:<id>:messages`` LIST of message JSON
* ``P operations`` ZSET of operation ids in order of first put, ``P operation:<id>``
  the record's JSON, ``P operations:unfinished`` SET of the ids queued or running
"""

from __future__ import annotations

import hashlib
from typing import Any

from redis.exceptions import NoScriptError

__all__ = ["SCRIPTS", "Script"]


class Script:
    """One Lua script, run by SHA with a fallback to its source."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.sha = hashlib.sha1(source.encode()).hexdigest()

    async def __call__(self, client: Any, keys: list[str], args: list[Any]) -> Any:
        try:
            return await client.evalsha(self.sha, len(keys), *keys, *args)
        except NoScriptError:
            return await client.eval(self.source, len(keys), *keys, *args)


# KEYS: chats, clock, chat hash.  ARGV: id, title, created_at, updated_at
_CREATE_CHAT = """
if redis.call('EXISTS', KEYS[3]) == 1 then return 0 end
redis.call('HSET', KEYS[3], 'id', ARGV[1], 'title', ARGV[2],
           'created_at', ARGV[3], 'updated_at', ARGV[4])
redis.call('ZADD', KEYS[1], redis.call('INCR', KEYS[2]), ARGV[1])
return 1
"""

# KEYS: chats, clock, chat hash, messages.  ARGV: chat id, message json, created_at
_APPEND_MESSAGE = """
if redis.call('EXISTS', KEYS[3]) == 0 then return 0 end
redis.call('RPUSH', KEYS[4], ARGV[2])
redis.call('HSET', KEYS[3], 'updated_at', ARGV[3])
redis.call('ZADD', KEYS[1], redis.call('INCR', KEYS[2]), ARGV[1])
return 1
"""

# KEYS: chats, chat hash, messages, the chat's answering key.  ARGV: chat id
# (Dropping the answering key tells an answer streaming in the chat: see _APPEND_ANSWER_TOKENS.)
_DELETE_CHAT = """
if redis.call('EXISTS', KEYS[2]) == 0 then return 0 end
redis.call('DEL', KEYS[2], KEYS[3], KEYS[4])
redis.call('ZREM', KEYS[1], ARGV[1])
return 1
"""

# KEYS: the chat's answering key, the answer's stream.  ARGV: answer id, ttl seconds
_BEGIN_ANSWER = """
redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2])
redis.call('DEL', KEYS[2])
return 1
"""

# KEYS: chats, clock, chat hash, messages, lease, the chat's answering key, the answer's stream.
# ARGV: chat id, answer id, lease ttl ms, user message json, created_at, history count,
# progress ttl seconds.  Returns -1 (no chat), 0 (lease held by another) or the last
# ``history`` message JSONs, the new one included.
_START_ANSWER = """
if redis.call('EXISTS', KEYS[3]) == 0 then return -1 end
local holder = redis.call('GET', KEYS[5])
if holder and holder ~= ARGV[2] then return 0 end
redis.call('SET', KEYS[5], ARGV[2], 'PX', ARGV[3])
redis.call('RPUSH', KEYS[4], ARGV[4])
redis.call('HSET', KEYS[3], 'updated_at', ARGV[5])
redis.call('ZADD', KEYS[1], redis.call('INCR', KEYS[2]), ARGV[1])
redis.call('SET', KEYS[6], ARGV[2], 'EX', ARGV[7])
redis.call('DEL', KEYS[7])
return redis.call('LRANGE', KEYS[4], -tonumber(ARGV[6]), -1)
"""

# KEYS: the chat's answering key, the answer's stream, the channel.
# ARGV: answer id, progress ttl seconds, first seq, then (delta, event json) per token.
# Returns 0, recording nothing, once the answer is no longer the chat's (chat deleted).
_APPEND_ANSWER_TOKENS = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
local seq = tonumber(ARGV[3])
for i = 4, #ARGV, 2 do
  redis.call('XADD', KEYS[2], seq .. '-0', 'd', ARGV[i])
  redis.call('PUBLISH', KEYS[3], ARGV[i + 1])
  seq = seq + 1
end
-- The TTLs are a safety net for a process that dies: renewed when half gone, not every call.
if redis.call('TTL', KEYS[2]) < tonumber(ARGV[2]) / 2 then
  redis.call('EXPIRE', KEYS[1], ARGV[2])
  redis.call('EXPIRE', KEYS[2], ARGV[2])
end
return 1
"""

# KEYS: chats, clock, chat hash, messages, lease, the chat's answering key, the answer's
# stream, the channel.  ARGV: chat id, answer id, message json ('' for none), created_at,
# the number n of events, the n events, then the events for a chat that is gone.
# Returns 1 if the message was stored.
_FINISH_ANSWER = """
local stored = 0
if ARGV[3] ~= '' and redis.call('EXISTS', KEYS[3]) == 1 then
  redis.call('RPUSH', KEYS[4], ARGV[3])
  redis.call('HSET', KEYS[3], 'updated_at', ARGV[4])
  redis.call('ZADD', KEYS[1], redis.call('INCR', KEYS[2]), ARGV[1])
  stored = 1
end
if redis.call('GET', KEYS[6]) == ARGV[2] then redis.call('DEL', KEYS[6]) end
redis.call('DEL', KEYS[7])
if redis.call('GET', KEYS[5]) == ARGV[2] then redis.call('DEL', KEYS[5]) end
local n = tonumber(ARGV[5])
local first, last = 6, 5 + n
if stored == 0 then first, last = 6 + n, #ARGV end
for i = first, last do redis.call('PUBLISH', KEYS[8], ARGV[i]) end
return stored
"""

# KEYS: the chat's answering key.  ARGV: the answer streams' key prefix.
# Returns false, or {answer id, its deltas in order} (flat: cheap to parse however long).
_ANSWER_PROGRESS = """
local answer = redis.call('GET', KEYS[1])
if not answer then return false end
local deltas = {}
for i, entry in ipairs(redis.call('XRANGE', ARGV[1] .. answer, '-', '+')) do
  deltas[i] = entry[2][2]
end
return {answer, deltas}
"""

# KEYS: the chat's answering key, the answer's stream.  ARGV: answer id
_END_ANSWER = """
if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('DEL', KEYS[1]) end
redis.call('DEL', KEYS[2])
return 1
"""

# KEYS: order zset, clock, value key, unfinished set, checkpoint key.
# ARGV: id, json, "1" if unfinished, checkpoint json ("" to leave the checkpoint alone)
_PUT_OPERATION = """
if ARGV[4] ~= '' then redis.call('SET', KEYS[5], ARGV[4]) end
if redis.call('ZSCORE', KEYS[1], ARGV[1]) == false then
  redis.call('ZADD', KEYS[1], redis.call('INCR', KEYS[2]), ARGV[1])
end
redis.call('SET', KEYS[3], ARGV[2])
if ARGV[3] == '1' then
  redis.call('SADD', KEYS[4], ARGV[1])
else
  redis.call('SREM', KEYS[4], ARGV[1])
end
return 1
"""

# A helper the fact scripts share: append one change to the fact log (a stream whose
# entry ids are "<seq>-0", seq from the log's counter), keeping about ``retained`` entries.
_LOG_FACT_CHANGE = """
local function log_change(log, counter, retained, op, fact_id)
  local seq = redis.call('INCR', counter)
  redis.call('XADD', log, 'MAXLEN', '~', retained, seq .. '-0', 'op', op, 'id', fact_id)
  return seq
end
"""

# KEYS: facts zset, clock, fact key, log, log counter.  ARGV: id, json, retained
_PUT_FACT = (
    _LOG_FACT_CHANGE
    + """
if redis.call('ZSCORE', KEYS[1], ARGV[1]) == false then
  redis.call('ZADD', KEYS[1], redis.call('INCR', KEYS[2]), ARGV[1])
end
redis.call('SET', KEYS[3], ARGV[2])
return log_change(KEYS[4], KEYS[5], ARGV[3], 'add', ARGV[1])
"""
)

# KEYS: facts zset, fact key, log, log counter, models set.
# ARGV: id, retained, vectors key prefix (+ model = one model's hash of embeddings)
_DELETE_FACT = (
    _LOG_FACT_CHANGE
    + """
if redis.call('ZREM', KEYS[1], ARGV[1]) == 0 then return 0 end
redis.call('DEL', KEYS[2])
for _, model in ipairs(redis.call('SMEMBERS', KEYS[5])) do
  redis.call('HDEL', ARGV[3] .. model, ARGV[1])
end
return log_change(KEYS[3], KEYS[4], ARGV[2], 'delete', ARGV[1])
"""
)

# KEYS: the model's vectors hash, models set, log, log counter.
# ARGV: model, retained, fact key prefix, then fact id, embedding pairs.  Returns the ids stored.
_PUT_FACT_VECTORS = (
    _LOG_FACT_CHANGE
    + """
redis.call('SADD', KEYS[2], ARGV[1])
local stored = {}
for i = 4, #ARGV, 2 do
  if redis.call('EXISTS', ARGV[3] .. ARGV[i]) == 1 then
    redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1])
    log_change(KEYS[3], KEYS[4], ARGV[2], 'vectors', ARGV[i])
    stored[#stored + 1] = ARGV[i]
  end
end
return stored
"""
)

# KEYS: lease.  ARGV: owner, ttl ms
_CLAIM_LEASE = """
local holder = redis.call('GET', KEYS[1])
if holder and holder ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return 1
"""

_RENEW_LEASE = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return 1
"""

_RELEASE_LEASE = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('DEL', KEYS[1])
return 1
"""

# KEYS: agents, seq, inbox zset, inbox data hash, doorbell list.
# ARGV: agent, id, priority (0-3), message json (without seq), seq override or ''
# Score: (3 - priority) * 1e12 + seq, so ZRANGE order is priority, then arrival.
_PUSH_INBOX = """
local seq = tonumber(ARGV[5])
if not seq then seq = redis.call('INCR', KEYS[2])
elseif seq > tonumber(redis.call('GET', KEYS[2]) or '0') then redis.call('SET', KEYS[2], seq) end
redis.call('SADD', KEYS[1], ARGV[1])
redis.call('HSET', KEYS[4], ARGV[2], ARGV[4])
redis.call('ZADD', KEYS[3], (3 - tonumber(ARGV[3])) * 1000000000000 + seq, ARGV[2])
redis.call('RPUSH', KEYS[5], '1')
redis.call('LTRIM', KEYS[5], -16, -1)
return seq
"""

# KEYS: inbox zset, inbox data hash.  ARGV: max count.  Returns {id, score, json, ...}.
_POP_INBOX = """
local taken = redis.call('ZRANGE', KEYS[1], 0, tonumber(ARGV[1]) - 1, 'WITHSCORES')
local result = {}
for i = 1, #taken, 2 do
  local id = taken[i]
  redis.call('ZREM', KEYS[1], id)
  table.insert(result, id)
  table.insert(result, taken[i + 1])
  table.insert(result, redis.call('HGET', KEYS[2], id))
  redis.call('HDEL', KEYS[2], id)
end
return result
"""

# KEYS: agents, seq, then per message: inbox zset, inbox data hash, doorbell list.
# ARGV: per message: agent, id, priority (0-3), message json, seq or ''.  Returns the seqs.
# One script for a broadcast's copies and for messages handed back, so either
# lands whole or not at all.
_PUSH_INBOX_MANY = """
local seqs = {}
for i = 0, #ARGV / 5 - 1 do
  local a, k = i * 5, 2 + i * 3
  local seq = tonumber(ARGV[a + 5])
  if not seq then seq = redis.call('INCR', KEYS[2])
  elseif seq > tonumber(redis.call('GET', KEYS[2]) or '0') then redis.call('SET', KEYS[2], seq) end
  redis.call('SADD', KEYS[1], ARGV[a + 1])
  redis.call('HSET', KEYS[k + 2], ARGV[a + 2], ARGV[a + 4])
  redis.call('ZADD', KEYS[k + 1], (3 - tonumber(ARGV[a + 3])) * 1000000000000 + seq, ARGV[a + 2])
  redis.call('RPUSH', KEYS[k + 3], '1')
  redis.call('LTRIM', KEYS[k + 3], -16, -1)
  table.insert(seqs, seq)
end
return seqs
"""

# Agents' presence is scored on Redis's own clock (TIME, in ms), so processes
# whose clocks disagree still agree on who is present.
_NOW_MS = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
"""

# KEYS: agents, presence zset.  ARGV: agent, ttl ms
_TOUCH_AGENT = (
    _NOW_MS
    + """
redis.call('SADD', KEYS[1], ARGV[1])
redis.call('ZADD', KEYS[2], now + tonumber(ARGV[2]), ARGV[1])
return 1
"""
)

# KEYS: presence zset.  Drops the lapsed, returns those still present.
_LIVE_AGENTS = (
    _NOW_MS
    + """
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
return redis.call('ZRANGE', KEYS[1], 0, -1)
"""
)

SCRIPTS = {
    name: Script(source)
    for name, source in {
        "create_chat": _CREATE_CHAT,
        "append_message": _APPEND_MESSAGE,
        "delete_chat": _DELETE_CHAT,
        "put_operation": _PUT_OPERATION,
        "put_fact": _PUT_FACT,
        "begin_answer": _BEGIN_ANSWER,
        "start_answer": _START_ANSWER,
        "append_answer_tokens": _APPEND_ANSWER_TOKENS,
        "finish_answer": _FINISH_ANSWER,
        "answer_progress": _ANSWER_PROGRESS,
        "end_answer": _END_ANSWER,
        "delete_fact": _DELETE_FACT,
        "put_fact_vectors": _PUT_FACT_VECTORS,
        "claim_lease": _CLAIM_LEASE,
        "renew_lease": _RENEW_LEASE,
        "release_lease": _RELEASE_LEASE,
        "push_inbox": _PUSH_INBOX,
        "pop_inbox": _POP_INBOX,
        "push_inbox_many": _PUSH_INBOX_MANY,
        "touch_agent": _TOUCH_AGENT,
        "live_agents": _LIVE_AGENTS,
    }.items()
}
