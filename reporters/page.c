/* page.c - buffers, JSON for <script> elements, templates and saving. */
#define _GNU_SOURCE
#include "page.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <string.h>
#include <unistd.h>

#include "assets.h"
#include "cli_common.h"
#include "report_cli.h"

const mp_asset_t *mp_asset(const char *name)
{
    for (const mp_asset_t *a = mp_assets; a->name; a++)
        if (!strcmp(a->name, name))
            return a;
    return NULL;
}

static int reserve(mp_buf_t *b, size_t more)
{
    if (b->oom)
        return -1;
    if (b->n + more + 1 <= b->cap)
        return 0;
    size_t cap = b->cap ? b->cap : 4096;
    while (cap < b->n + more + 1)
        cap *= 2;
    char *p = realloc(b->p, cap);
    if (!p) {
        b->oom = 1;
        return -1;
    }
    b->p = p;
    b->cap = cap;
    return 0;
}

void mp_buf_add(mp_buf_t *b, const char *s, size_t n)
{
    if (reserve(b, n))
        return;
    memcpy(b->p + b->n, s, n);
    b->n += n;
    b->p[b->n] = '\0';
}

void mp_buf_str(mp_buf_t *b, const char *s) { mp_buf_add(b, s, strlen(s)); }

void mp_buf_printf(mp_buf_t *b, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n < 0 || reserve(b, (size_t)n))
        return;
    va_start(ap, fmt);
    vsnprintf(b->p + b->n, (size_t)n + 1, fmt, ap);
    va_end(ap);
    b->n += (size_t)n;
}

void mp_buf_u64(mp_buf_t *b, uint64_t v)
{
    char t[24];
    size_t i = sizeof t;
    do
        t[--i] = (char)('0' + v % 10);
    while (v /= 10);
    mp_buf_add(b, t + i, sizeof t - i);
}

void mp_buf_i64(mp_buf_t *b, int64_t v)
{
    if (v < 0) {
        mp_buf_add(b, "-", 1);
        mp_buf_u64(b, -(uint64_t)v);
    } else {
        mp_buf_u64(b, (uint64_t)v);
    }
}

void mp_buf_json_string(mp_buf_t *b, const char *s)
{
    mp_buf_add(b, "\"", 1);
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        const unsigned char *q = p;
        while (*q >= 0x20 && *q != '"' && *q != '\\' && *q != '<')
            q++;
        mp_buf_add(b, (const char *)p, (size_t)(q - p));
        if (!*q)
            break;
        p = q;
        switch (*p) {
        case '"': mp_buf_add(b, "\\\"", 2); break;
        case '\\': mp_buf_add(b, "\\\\", 2); break;
        case '\n': mp_buf_add(b, "\\n", 2); break;
        case '\t': mp_buf_add(b, "\\t", 2); break;
        default: mp_buf_printf(b, "\\u%04x", *p); break;
        }
    }
    mp_buf_add(b, "\"", 1);
}

void mp_buf_json_text(mp_buf_t *b, const char *json)
{
    for (const char *p = json; *p;) {
        size_t n = strcspn(p, "<");
        mp_buf_add(b, p, n);
        p += n;
        if (*p == '<') {
            mp_buf_add(b, "\\u003c", 6);
            p++;
        }
    }
}

void mp_buf_free(mp_buf_t *b)
{
    free(b->p);
    memset(b, 0, sizeof *b);
}

static uint32_t str_hash(const char *s)
{
    uint32_t h = 2166136261u;
    for (; *s; s++)
        h = (h ^ (unsigned char)*s) * 16777619u;
    return h;
}

static int strtab_grow(mp_strtab_t *t)
{
    uint32_t cap = t->hcap ? t->hcap * 2 : 1024;
    uint32_t *h = calloc(cap, sizeof *h);
    char **v = realloc(t->v, (size_t)cap / 2 * sizeof *v);
    if (!h || !v) {
        free(h);
        if (v)
            t->v = v;
        return -1;
    }
    t->v = v;
    t->cap = cap / 2;
    for (uint32_t i = 0; i < t->n; i++) {
        uint32_t j = str_hash(t->v[i]) & (cap - 1);
        while (h[j])
            j = (j + 1) & (cap - 1);
        h[j] = i + 1;
    }
    free(t->hash);
    t->hash = h;
    t->hcap = cap;
    return 0;
}

int64_t mp_strtab_id(mp_strtab_t *t, const char *s)
{
    if (t->n == t->cap && strtab_grow(t))
        return -1;
    uint32_t j = str_hash(s) & (t->hcap - 1);
    for (; t->hash[j]; j = (j + 1) & (t->hcap - 1))
        if (!strcmp(t->v[t->hash[j] - 1], s))
            return t->hash[j] - 1;
    if (!(t->v[t->n] = strdup(s)))
        return -1;
    t->hash[j] = ++t->n;
    return t->n - 1;
}

void mp_strtab_free(mp_strtab_t *t)
{
    for (uint32_t i = 0; i < t->n; i++)
        free(t->v[i]);
    free(t->v);
    free(t->hash);
}

int mp_page_fill(mp_buf_t *out, const char *name, const mp_page_part_t *parts, size_t nparts)
{
    static const char open[] = "/*MEMPROF:", close[] = "*/";
    const mp_asset_t *t = mp_asset(name);
    if (!t)
        return -1;
    const char *p = t->data, *end = t->data + t->len;
    for (const char *m; (m = memmem(p, (size_t)(end - p), open, sizeof open - 1));) {
        const char *key = m + sizeof open - 1;
        const char *k_end = memmem(key, (size_t)(end - key), close, sizeof close - 1);
        if (!k_end)
            return -1;
        size_t i = 0;
        while (i < nparts && !(strlen(parts[i].key) == (size_t)(k_end - key) && !memcmp(parts[i].key, key, (size_t)(k_end - key))))
            i++;
        if (i == nparts)
            return -1;
        mp_buf_add(out, p, (size_t)(m - p));
        mp_buf_add(out, parts[i].text, parts[i].len);
        p = k_end + sizeof close - 1;
    }
    mp_buf_add(out, p, (size_t)(end - p));
    return 0;
}

void mp_page_assets(mp_buf_t *out, const char *const *names)
{
    for (; *names; names++) {
        const mp_asset_t *a = mp_asset(*names);
        if (a) {
            mp_buf_add(out, a->data, a->len);
            mp_buf_add(out, "\n", 1);
        }
    }
}

int mp_page_option(mp_report_cli_t *c, mp_page_out_t *o, int argc, char **argv, int i)
{
    const char *a = argv[i];
    int took = 1;
    if (!strcmp(a, "-f") || !strcmp(a, "--force")) {
        o->force = 1;
    } else if (!strcmp(a, "-o") || mp_report_cli_is(a, "--output")) {
        o->output = mp_report_cli_value(c, argc, argv, i, &took);
        if (!*o->output)
            mp_cli_die(c->prog, "%s needs a file name", a);
    } else {
        return 0;
    }
    return took;
}

char *mp_page_target(const char *prog, const mp_page_out_t *o, const char *capture, const char *suffix)
{
    char *p;
    if (o->output) {
        p = strdup(o->output);
    } else {
        size_t n = strlen(capture);
        if (n > 8 && !strcmp(capture + n - 8, ".memprof"))
            n -= 8;
        if ((p = malloc(n + strlen(suffix) + 1))) {
            memcpy(p, capture, n);
            strcpy(p + n, suffix);
        }
    }
    if (!p)
        mp_cli_die(prog, "out of memory");
    if (!o->force && access(p, F_OK) == 0)
        mp_cli_die(prog, "%s already exists; choose another with -o FILE, or replace it with --force", p);
    return p;
}

void mp_page_save(const char *prog, const char *path, int force, const mp_buf_t *b)
{
    if (b->oom)
        mp_cli_die(prog, "out of memory while writing the page");
    char tmp[4096];
    const char *target = path;
    int fd;
    if (force) { /* the old file stays whole until the new one is */
        if (snprintf(tmp, sizeof tmp, "%s.XXXXXX", path) >= (int)sizeof tmp)
            mp_cli_die(prog, "%s: path too long", path);
        fd = mkostemp(tmp, O_CLOEXEC);
        target = tmp;
    } else {
        fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0644);
        if (fd < 0 && errno == EEXIST)
            mp_cli_die(prog, "%s already exists; choose another with -o FILE, or replace it with --force", path);
    }
    if (fd < 0)
        mp_cli_die(prog, "cannot create %s: %s", force ? path : target, strerror(errno));
    int err = 0;
    mode_t mask = umask(0);
    umask(mask);
    if (mp_write_all(fd, b->p, b->n) || (force && fchmod(fd, 0644 & ~mask)))
        err = errno ? errno : EIO;
    if (close(fd) && !err)
        err = errno;
    if (!err && force && rename(tmp, path))
        err = errno;
    if (err) {
        unlink(target);
        mp_cli_die(prog, "cannot write %s: %s", path, strerror(err));
    }
}
