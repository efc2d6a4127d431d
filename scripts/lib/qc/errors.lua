-- Structured errors for scripts/lib: raise a table, and the host turns it into an HTTP
-- answer ({"error":{"code","message","field"?}} with its status) in one place, the C
-- renderer of every error body (runtime/net/http_error.c): no Lua code builds that body itself.
-- The host reads the four fields raw (no metamethods run after the call has ended); a table
-- without an integer status is taken for a bug, logged, and answered 500. Scripts catch
-- these errors with pcall and read the same fields.
local M = {}

---@class qc.Error
---@field status integer HTTP status
---@field code string stable machine-readable code
---@field message string
---@field field string|nil the request field at fault

---@param status integer
---@param code string
---@param message string
---@param field string|nil
function M.raise(status, code, message, field)
  error({ status = status, code = code, message = message, field = field }, 2)
end

---A 422 naming the field and why.
---@param field string
---@param why string
function M.invalid(field, why)
  error({ status = 422, code = "VALIDATION_ERROR", message = field .. ": " .. why, field = field }, 2)
end

---The message of any error value (table or string).
---@return string
function M.message(err)
  if type(err) == "table" then return err.message or err.code or "error" end
  return tostring(err)
end

return M
