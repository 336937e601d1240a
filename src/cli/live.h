/* live.h - the live view of `memprof run --live` and `memprof live PORT`: a
 * capture read as it arrives (the program's events, through a pipe or a
 * socket), replayed by the analysis every report uses, and drawn on the
 * terminal with ncurses about every second: heap and resident memory now
 * and at their peak, the allocation rate, and the locations holding the
 * most, with keys to sort, pick a thread and quit.
 *
 * The caller owns the loop: it feeds what arrives (mp_live_feed), polls
 * stdin for keys (mp_live_keys) and draws when mp_live_wait_ms() says. */
#ifndef MP_LIVE_H
#define MP_LIVE_H

#include <stddef.h>

#include "analysis.h"

typedef struct mp_liveview_s mp_liveview_t;

/* A view with nothing read yet; NULL when out of memory. */
mp_liveview_t *mp_live_new(void);
void mp_live_free(mp_liveview_t *lv);

/* Bytes of the capture, as they come. 0, or the first error (< 0) of the
 * read: later bytes are ignored then, and the view says what went wrong. */
int mp_live_feed(mp_liveview_t *lv, const void *data, size_t n);
/* The capture ended (the writer closed it); `why` is what the view's last
 * line says ("the program exited with status 0"). */
void mp_live_ended(mp_liveview_t *lv, const char *why);
/* One line about the read's error ("" when there was none). */
const char *mp_live_error(const mp_liveview_t *lv);
/* The replay so far; mp_live_finish() ends it (for an aggregated capture of
 * it: aggregate.h). 0 or an error. */
mp_analysis_t *mp_live_analysis(mp_liveview_t *lv);
int mp_live_finish(mp_liveview_t *lv);

/* Puts the view on the terminal (stdin and stdout): 0, or -1 with one line
 * in err when there is no terminal ncurses can use. */
int mp_live_show(mp_liveview_t *lv, char *err, size_t len);
/* Handles the keys waiting on stdin; 1 once the user quit (the terminal is
 * given back then), else 0. */
int mp_live_keys(mp_liveview_t *lv);
/* Milliseconds until the view is due to be drawn again (0: now). */
int mp_live_wait_ms(const mp_liveview_t *lv);
/* Draws the view when it is due (or now, when `force`). */
void mp_live_draw(mp_liveview_t *lv, int force);
/* Gives the terminal back (once; also done by mp_live_free). */
void mp_live_hide(mp_liveview_t *lv);

#endif
