/* assets.h - files built into the report programs (cmake/embed.cmake):
 * the page templates, their styles and scripts, and the JavaScript
 * libraries vendored under reporters/assets/vendor. */
#ifndef MP_ASSETS_H
#define MP_ASSETS_H

#include <stddef.h>

typedef struct {
    const char *name;   /* path under reporters/assets ("vendor/d3.min.js") */
    const char *data;   /* NUL-terminated */
    size_t len;
} mp_asset_t;

/* Ends with an entry whose name is NULL. */
extern const mp_asset_t mp_assets[];

/* The asset called `name`; NULL when there is none (a build error). */
const mp_asset_t *mp_asset(const char *name);

#endif
