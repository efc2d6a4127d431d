-- Routes: which handler answers each method + path.
--
-- Called when policies load (start, reload, `quantcoach check`); the table it returns is
-- compiled and checked, and a broken file keeps the previous routes serving.
-- Each entry is { METHOD, "/path/with/{params}", handler }; a last segment {name...} takes
-- the rest of the path, slashes included. Every route is described in web/openapi.json
-- (spec/openapi_spec.lua fails on a route without a description). A handler receives the request
-- (req.method, req.path, req.params, req.args, req.headers, req.body, req.json, req.peer,
-- req:header(name)) and returns status, headers, body; a table body is sent as JSON.
-- auth.required(handler) lets only callers with a QC_API_KEYS key through (when keys are set).
-- A JSON body is decoded before the handler runs; one that is not a JSON object is refused
-- (422), so req.json is always an object or nil.
--
-- This file may require qc.handlers.*, qc.auth, qc.errors, qc.json, qc.csv, qc.policies,
-- qc.log, qc.time, qc.jwt and cjson: read-only views, where a misspelt field raises, so
-- `rooms.craete` is rejected on reload as "routes.lua:LINE: qc.handlers.rooms has no field
-- 'craete'" and the previous routes keep serving.
--
-- Example: { "GET", "/rooms/{room}/participants", auth.required(rooms.participants) }
local service = require "qc.handlers.service"
local admin = require "qc.handlers.admin"
local rooms = require "qc.handlers.rooms"
local webhooks = require "qc.handlers.webhooks"
local ingest = require "qc.handlers.ingest"
local live = require "qc.handlers.live"
local transcripts = require "qc.handlers.transcripts"
local evaluations = require "qc.handlers.evaluations"
local metrics = require "qc.handlers.metrics"
local docs = require "qc.handlers.docs"
local console = require "qc.handlers.console"
local auth = require "qc.auth"

return {
  { "GET", "/", service.info },
  { "GET", "/health", service.health },
  { "POST", "/admin/reload", admin.reload },
  { "POST", "/rooms/create", auth.required(rooms.create) },
  { "POST", "/tokens/generate", auth.required(rooms.generate_token) },
  { "GET", "/rooms", auth.required(rooms.list) },
  { "GET", "/rooms/{room}/participants", auth.required(rooms.participants) },
  { "DELETE", "/rooms/{room}", auth.required(rooms.delete) },
  { "GET", "/rooms/{room}/evaluations", auth.required(evaluations.list) },
  { "GET", "/rooms/{room}/report", auth.required(evaluations.report) },
  { "POST", "/webhooks/livekit", webhooks.livekit },
  -- Audio: the signed token in the URL is ingest's only key (Egress sends no header); the
  -- live socket takes the participant's own LiveKit token or an API key (handlers/live.lua).
  { "GET", "/ingest", ingest.ingest },
  { "GET", "/rooms/{room}/live", live.live },
  { "GET", "/rooms/{room}/transcript", auth.required(transcripts.transcript) },
  -- Prometheus; loopback or the admin key, as /admin/reload.
  { "GET", "/metrics", metrics.metrics },
  -- The API's description (web/openapi.json) and a page that browses it; {file...} is the
  -- rest of the path, slashes included.
  { "GET", "/openapi.json", docs.openapi },
  { "GET", "/docs", docs.page },
  { "GET", "/docs/{file...}", docs.asset },
  -- The console's page and files are public (they hold no data); what it shows comes from
  -- the API above, with the key the operator types in.
  { "GET", "/console", console.page },
  { "GET", "/console/{file...}", console.asset },
}
