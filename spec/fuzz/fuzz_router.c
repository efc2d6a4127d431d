/* libFuzzer harness for route matching (scripts/lib/qc/router.lua) with the real
 * policies/routes.lua, in a Lua state of its own (the handler modules it requires are
 * stubs: only the routes matter here). Input lines: a method, a path, then optional extra
 * routes "METHOD /pattern" compiled as a routes policy of their own. Properties: match
 * never raises; a match gives a function and string parameters that are non-empty and hold
 * no '/'; no match gives nil params and at most an Allow list naming OPTIONS; compile raises
 * only "fuzz: ..." messages; and a segment put into /rooms/{room}/participants or
 * DELETE /rooms/{room} comes back as params.room. */
#define QC_FUZZ_LUA
#include "fuzz_common.h"

static const char HARNESS[] =
    "local source_dir = ...\n"
    "local router = require 'qc.router'\n"
    "local function fail(fmt, ...) error(fmt:format(...), 0) end\n"
    /* Every field of a stub module is a distinct handler; auth.required(h) gives h back. */
    "local function stub()\n"
    "  return setmetatable({}, { __index = function(t, k)\n"
    "    local f = function(h, ...) if type(h) == 'function' then return h end end\n"
    "    rawset(t, k, f)\n"
    "    return f\n"
    "  end })\n"
    "end\n"
    "local env = setmetatable({ require = stub }, { __index = _G })\n"
    "local routes = assert(loadfile(source_dir .. '/policies/routes.lua', 't', env))()\n"
    "local real = router.compile(routes, 'routes.lua')\n"
    "local function check(r, method, path)\n"
    "  local ok, h, params, allow = pcall(r.match, r, method, path)\n"
    "  if not ok then fail('match(%q, %q) raised %s', method, path, tostring(h)) end\n"
    "  if h ~= nil then\n"
    "    if type(h) ~= 'function' or type(params) ~= 'table' then fail('match(%q, %q): handler %s, params %s', method, path, type(h), type(params)) end\n"
    "    for k, v in pairs(params) do\n"
    "      if type(k) ~= 'string' or type(v) ~= 'string' or v == '' or v:find('/', 1, true) then\n"
    "        fail('match(%q, %q): param %s = %q', method, path, tostring(k), tostring(v))\n"
    "      end\n"
    "    end\n"
    "    if allow ~= nil then fail('match(%q, %q): a handler and an Allow list', method, path) end\n"
    "  else\n"
    "    if params ~= nil then fail('match(%q, %q): params without a handler', method, path) end\n"
    "    if allow ~= nil and (type(allow) ~= 'string' or not allow:find('OPTIONS', 1, true)) then\n"
    "      fail('match(%q, %q): Allow %q', method, path, tostring(allow))\n"
    "    end\n"
    "  end\n"
    "  return h, params\n"
    "end\n"
    "return function(input)\n"
    "  local lines = {}\n"
    "  for l in (input .. '\\n'):gmatch('([^\\n]*)\\n') do lines[#lines + 1] = l end\n"
    "  local method, path = lines[1] or '', lines[2] or '/'\n"
    "  check(real, method, path)\n"
    "  local seg = path:gsub('/', '')\n"
    "  if seg ~= '' then\n"
    "    local h, p = check(real, 'GET', '/rooms/' .. seg .. '/participants')\n"
    "    if not h or p.room ~= seg then fail('GET /rooms/%s/participants: room %s', seg, tostring(p and p.room)) end\n"
    /* fixtures/fuzz/router/delete-room-named-create: a static route must not hide a
     * pattern for the methods it does not take (a room named "create"). */
    "    h, p = check(real, 'DELETE', '/rooms/' .. seg)\n"
    "    if not h or p.room ~= seg then fail('DELETE /rooms/%s: room %s', seg, tostring(p and p.room)) end\n"
    "  end\n"
    "  if #lines > 2 then\n"
    "    local extra = {}\n"
    "    for i = 3, #lines do\n"
    "      local m, p = lines[i]:match('^(%S*) (.*)$')\n"
    "      extra[#extra + 1] = { m or lines[i], p or '', function() end }\n"
    "    end\n"
    "    local ok, r = pcall(router.compile, extra, 'fuzz')\n"
    "    if ok then check(r, method, path)\n"
    "    elseif type(r) ~= 'string' or r:sub(1, 6) ~= 'fuzz: ' then fail('compile raised %q', tostring(r)) end\n"
    "  end\n"
    "end\n";

static lua_State *L;
static int ref;

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (!L) L = fuzz_lua_open(HARNESS, "=fuzz_router", &ref);
    fuzz_lua_run(L, ref, data, size);
    return 0;
}
