/* libFuzzer harness for the CSV reader (scripts/lib/qc/csv.lua), run in a Lua state of its
 * own. The input is the file's text. Properties: parse either returns records or raises
 * "line N: message"; each record is a non-empty array of strings with a line number that
 * never goes backwards; and what format_row writes from the records, parse reads back as
 * the same fields. */
#define QC_FUZZ_LUA
#include "fuzz_common.h"

static const char HARNESS[] =
    "local csv = require 'qc.csv'\n"
    "local function fail(fmt, ...) error(fmt:format(...), 0) end\n"
    "return function(text)\n"
    "  local ok, recs = pcall(csv.parse, text)\n"
    "  if not ok then\n"
    "    if type(recs) ~= 'string' or not recs:match('^line %d+: ') then\n"
    "      fail('parse raised %q, not \"line N: message\"', tostring(recs))\n"
    "    end\n"
    "    return\n"
    "  end\n"
    "  local prev = 1\n"
    "  for i, r in ipairs(recs) do\n"
    "    if math.type(r.line) ~= 'integer' or r.line < prev then fail('record %d: line %s after %d', i, tostring(r.line), prev) end\n"
    "    prev = r.line\n"
    "    if #r == 0 then fail('record %d has no fields', i) end\n"
    "    for j = 1, #r do\n"
    "      if type(r[j]) ~= 'string' then fail('record %d field %d is a %s', i, j, type(r[j])) end\n"
    "    end\n"
    "  end\n"
    "  local out = {}\n"
    "  for i, r in ipairs(recs) do out[i] = csv.format_row(r) end\n"
    "  local text2 = table.concat(out)\n"
    "  local ok2, again = pcall(csv.parse, text2)\n"
    "  if not ok2 then fail('format_row wrote %q, which parse refuses: %s', text2, tostring(again)) end\n"
    "  if #again ~= #recs then fail('%d records written, %d read back from %q', #recs, #again, text2) end\n"
    "  for i, r in ipairs(recs) do\n"
    "    local a = again[i]\n"
    "    if #a ~= #r then fail('record %d: %d fields written, %d read back', i, #r, #a) end\n"
    "    for j = 1, #r do\n"
    "      if a[j] ~= r[j] then fail('record %d field %d: wrote %q, read back %q', i, j, r[j], a[j]) end\n"
    "    end\n"
    "  end\n"
    "end\n";

static lua_State *L;
static int ref;

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (!L) L = fuzz_lua_open(HARNESS, "=fuzz_csv", &ref);
    fuzz_lua_run(L, ref, data, size);
    return 0;
}
