/* The PostgreSQL half of qc.store (bindings/store_pg.c), for bindings/store.c. */
#ifndef QC_BINDINGS_STORE_PG_H
#define QC_BINDINGS_STORE_PG_H

#include <lua.h>

/* Whether store.open's target is a PostgreSQL URI (postgres:// or postgresql://). */
int qc_store_pg_is_uri(const char *target);

/* Pushes a PG db for uri with `pool` query connections (<= 0: the default, 4), or nil,
 * message, "OPEN_FAILED". Returns the number of values pushed. */
int qc_store_pg_open(lua_State *L, const char *uri, int pool);

/* store.redact(uri) -> the URI with its password replaced by *** */
int qc_store_pg_redact(lua_State *L);

/* Creates the PG metatables, the transaction wrappers and the result builder. */
void qc_store_pg_register(lua_State *L);

#endif
