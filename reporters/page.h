/* page.h - what the reports that write a self-contained HTML page share:
 * a growable text buffer with JSON writers safe to inline in a <script>
 * element, filling a built-in template, and saving the page without
 * overwriting anything the user did not name. Programs only (exits). */
#ifndef MP_PAGE_H
#define MP_PAGE_H

#include <stddef.h>
#include <stdint.h>

typedef struct {
    char *p;
    size_t n, cap;
    int oom;        /* an append failed: the text is incomplete */
} mp_buf_t;

void mp_buf_add(mp_buf_t *b, const char *s, size_t n);
void mp_buf_str(mp_buf_t *b, const char *s);
void mp_buf_printf(mp_buf_t *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void mp_buf_u64(mp_buf_t *b, uint64_t v);
void mp_buf_i64(mp_buf_t *b, int64_t v);
/* A JSON string, quoted; '<' is written \u003c so that no "</script>"
 * can end the element it is inlined into. */
void mp_buf_json_string(mp_buf_t *b, const char *s);
/* JSON text (from cJSON) with every '<' escaped the same way (in JSON,
 * '<' can only be inside a string). */
void mp_buf_json_text(mp_buf_t *b, const char *json);
void mp_buf_free(mp_buf_t *b);

/* Strings, each kept once, numbered in the order they came. */
typedef struct {
    char **v;
    uint32_t n, cap;
    uint32_t *hash;     /* index + 1 */
    uint32_t hcap;
} mp_strtab_t;

/* The number of s (added on first use); -1 when out of memory. */
int64_t mp_strtab_id(mp_strtab_t *t, const char *s);
void mp_strtab_free(mp_strtab_t *t);

/* A template's marker "/\*MEMPROF:key*\/" and what replaces it. */
typedef struct {
    const char *key;
    const char *text;
    size_t len;
} mp_page_part_t;

/* Appends built-in template `name` to out with each marker replaced (every
 * marker of the template must have a part). 0, or -1 for an unknown marker. */
int mp_page_fill(mp_buf_t *out, const char *name, const mp_page_part_t *parts, size_t nparts);
/* Appends the built-in assets named (a NULL-ended list), each followed by a newline. */
void mp_page_assets(mp_buf_t *out, const char *const *names);

/* Where a page goes: -o/--output FILE, and -f/--force to replace it. */
typedef struct {
    const char *output;     /* NULL: beside the capture */
    int force;
} mp_page_out_t;

struct mp_report_cli_s;
/* One of those options at argv[i]: how many arguments it took, 0 if it
 * is none of them (a report's option callback tries it first). */
int mp_page_option(struct mp_report_cli_s *c, mp_page_out_t *o, int argc, char **argv, int i);
/* The page's path: the given one, or the capture's path with its
 * ".memprof" ending (if any) replaced by `suffix` (".flamegraph.html").
 * Exits 2 when it exists and --force was not given: before the work. */
char *mp_page_target(const char *prog, const mp_page_out_t *o, const char *capture, const char *suffix);
/* Writes b to path, as a new file unless force (then through a temporary
 * file renamed over it). Exits 2 with one line on any failure, leaving no
 * partial file behind. */
void mp_page_save(const char *prog, const char *path, int force, const mp_buf_t *b);

#endif
