-- Retention: the records that only grow (issued tokens, ~51 bytes each; webhook deliveries)
-- are deleted once older than QC_RETENTION_DAYS (90 by default, 0 keeps them forever).
-- The server starts M.start as a task of its own (runtime/main.c, qc_host_start_service):
-- it sweeps at start and then every hour, one batch of rows per loop turn, so a store of
-- millions of rows is trimmed without holding up a request for more than one small DELETE.
--
-- Rows are walked in key order (tokens.id; SQLite's rowid for webhook_events), which is the
-- order they were written in, without an index on the time column: an index would cost every
-- issued token its upkeep (1.5 us measured for the one on tokens(room)). A batch is the next
-- BATCH keys; a sweep of a table ends at the first batch with nothing old enough in it, since
-- rows after it were written later still. On PostgreSQL webhook_events has no such key (its
-- id is LiveKit's text): it is purged BATCH old rows at a time, found by a scan, which this
-- small table (a few deliveries per room) affords.
local host = require "qc.host"
local time = require "qc.time"
local log = require "qc.log"

local M = {}

---Rows per DELETE: small enough that one statement takes a few milliseconds.
M.BATCH = 1000
---Seconds between sweeps.
M.INTERVAL = 3600

---@type { name: string, column: string }[] the tables swept and their time column (unix seconds)
M.TABLES = {
  { name = "tokens", column = "issued_at", key = "id" },
  { name = "webhook_events", column = "received_at" },
}

-- PostgreSQL, a table without a key in write order: BATCH old rows per DELETE until a
-- DELETE finds fewer.
local function purge_scan(handle, t, cutoff, batch, pause)
  local del = ("DELETE FROM %s WHERE ctid IN (SELECT ctid FROM %s WHERE %s < ? LIMIT ?)"):format(t.name, t.name, t.column)
  local deleted, batches = 0, 0
  while true do
    local n, err = handle:run(del, cutoff, batch)
    if not n then return nil, err end
    batches = batches + 1
    deleted = deleted + n
    if n < batch then break end
    if pause then pause() end
  end
  return deleted, batches
end

---Deletes the rows of table `t` whose time column is before `cutoff`, BATCH rows at a time,
---calling pause() between batches.
---@param handle table a qc.store handle
---@param t { name: string, column: string }
---@param cutoff integer unix seconds
---@param batch integer rows per batch
---@param pause fun()|nil called between batches (yields to the loop in the server)
---@return integer|nil deleted, integer|string batches_or_error
function M.purge_table(handle, t, cutoff, batch, pause)
  local postgres = handle.backend and handle:backend() == "postgres"
  if postgres and not t.key then return purge_scan(handle, t, cutoff, batch, pause) end
  local key = t.key or "rowid"
  local span = ("SELECT max(r) AS last FROM (SELECT %s AS r FROM %s WHERE %s > ? ORDER BY %s LIMIT ?) AS b")
    :format(key, t.name, key, key)
  local del = ("DELETE FROM %s WHERE %s > ? AND %s <= ? AND %s < ?"):format(t.name, key, key, t.column)
  local after, deleted, batches = 0, 0, 0
  while true do
    local rows, err = handle:query(span, after, batch)
    if not rows then return nil, err end
    local last = rows[1] and rows[1].last
    if not last then break end
    local n, derr = handle:run(del, after, last, cutoff)
    if not n then return nil, derr end
    batches = batches + 1
    deleted = deleted + n
    if n == 0 then break end
    after = last
    if pause then pause() end
  end
  return deleted, batches
end

---One sweep of every table. Logs one line per table that had rows to delete, and a warning
---for a table the store would not sweep (it is tried again at the next sweep).
---@param handle table a qc.store handle
---@param days integer retention in days (> 0)
---@param now number|nil unix seconds (default: now)
---@param pause fun()|nil
---@return table<string, integer> deleted rows by table
function M.sweep(handle, days, now, pause)
  local cutoff = math.floor((now or time.now()) - days * 86400)
  local out = {}
  for _, t in ipairs(M.TABLES) do
    local n, batches = M.purge_table(handle, t, cutoff, M.BATCH, pause)
    if not n then
      log.warn("retention", "sweep failed", { table = t.name, error = tostring(batches) })
    else
      out[t.name] = n
      if n > 0 then
        log.info("retention", "purged", { table = t.name, rows = n, batches = batches, days = days, cutoff = cutoff })
      end
    end
  end
  return out
end

---The server's retention task: sweeps at start, then every INTERVAL seconds, until the
---server stops. With QC_RETENTION_DAYS=0 it says so once and ends.
function M.start()
  local days = host.config().retention_days or 90
  if days <= 0 then
    log.info("retention", "off: rows are kept forever", { days = 0 })
    return
  end
  local db = require "qc.db"
  local function pause() time.sleep(0) end
  while true do
    -- A store that cannot be opened now (a full disk) is tried again at the next sweep.
    local ok, handle = pcall(db.get)
    if ok then
      local counts = M.sweep(handle, days, nil, pause)
      log.info("retention", "sweep done", { days = days, tokens = counts.tokens, webhook_events = counts.webhook_events })
    else
      log.warn("retention", "store unavailable", { error = type(handle) == "table" and handle.message or tostring(handle) })
    end
    time.sleep(M.INTERVAL)
  end
end

return M
