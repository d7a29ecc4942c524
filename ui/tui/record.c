/* The explorer's record of the session: a transcript (ui/transcript.h) fed
 * as things happen (tokens from the trace sink, turns from the worker,
 * control changes after each one), saved by `s` / `:save` and kept in
 * $XDG_STATE_HOME/moescope/autosave.json (autosave-N.json for the Nth
 * explorer running at once) so that a crash, a closed terminal or
 * `kill -9` loses at most the last fraction of a second. The autosave is written
 * after every token while it is small, but never more often than keeps it
 * to a hundredth of the time (a fast model saves every few dozen tokens:
 * the explorer must generate within 5% of `moescope run`'s speed), without
 * an fsync (a crash of the process still finds the file whole); durably per
 * turn and every 2 s once it is large; and removed on a clean quit; the next start
 * offers to restore it (restore_job re-evaluates it into the session).
 *
 * rec_lock guards the transcript and the autosave state. It is the
 * innermost lock: taken with sess_lock or lock held, never the reverse. */
#include <errno.h>
#include <fcntl.h>
#include <glob.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "../controls_parse.h"
#include "tui.h"

/* Below this the autosave follows every token; above, turns and a timer. */
#define AUTOSAVE_SMALL (4L << 20)
#define AUTOSAVE_PERIOD 2.0
/* Below AUTOSAVE_SMALL, saves are at least this many times their own
 * duration apart: the autosave takes at most a hundredth of the time. With
 * 10 (a tenth), the explorer generated tiny-mixtral's 2040 tokens at
 * 5230-5700 tok/s with the autosave and 6570 without; the saves between
 * tokens are since 9 times quicker (no fsync, numbers formatted by hand),
 * so 100 keeps them about as frequent as 10 did. */
#define AUTOSAVE_COST 100.0
/* Explorers running at once, each with its own autosave file. */
#define AUTOSAVE_SLOTS 16

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

int record_init(tui *t)
{
    pthread_mutex_init(&t->rec_lock, NULL);
    t->rec_turn = -1;
    if (!t->rec && !(t->rec = transcript_new(t->m, t->tok, &t->sp)))
        return -1;
    const char *state = getenv("XDG_STATE_HOME"), *home = getenv("HOME");
    char dir[4000];
    if (state && *state)
        snprintf(dir, sizeof dir, "%s/moescope", state);
    else if (home && *home)
        snprintf(dir, sizeof dir, "%s/.local/state/moescope", home);
    else
        return 0; /* nowhere to keep it: no autosave */
    for (char *p = dir + 1; *p; p++) /* mkdir -p */
        if (*p == '/') {
            *p = 0;
            mkdir(dir, 0700);
            *p = '/';
        }
    mkdir(dir, 0700);
    /* A slot per running explorer, held by a lock the kernel drops when the
     * process dies (kill -9 too): a free slot with a file in it is a
     * crashed session's, offered first; else the first free slot. */
    char path[4096], lock[4200];
    for (int pass = 0; pass < 2 && !t->autosave[0]; pass++)
        for (int i = 0; i < AUTOSAVE_SLOTS && !t->autosave[0]; i++) {
            if (i)
                snprintf(path, sizeof path, "%s/autosave-%d.json", dir, i + 1);
            else
                snprintf(path, sizeof path, "%s/autosave.json", dir);
            if (pass == 0 && access(path, F_OK) != 0)
                continue;
            snprintf(lock, sizeof lock, "%s.lock", path);
            int fd = open(lock, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
            if (fd < 0)
                continue;
            if (flock(fd, LOCK_EX | LOCK_NB) != 0) {
                close(fd);
                continue;
            }
            t->autosave_fd = fd;
            snprintf(t->autosave, sizeof t->autosave, "%s", path);
        }
    if (!t->autosave[0])
        return 0; /* every slot taken: this explorer keeps no autosave */
    /* temporary files of this slot's saves that a kill interrupted */
    char pat[4200];
    glob_t g;
    snprintf(pat, sizeof pat, "%s.tmp??????", t->autosave);
    if (glob(pat, GLOB_NOSORT, NULL, &g) == 0)
        for (size_t i = 0; i < g.gl_pathc; i++)
            unlink(g.gl_pathv[i]);
    globfree(&g);
    return 0;
}

void record_done(tui *t)
{
    if (t->autosave[0])
        close(t->autosave_fd); /* frees the slot */
    t->autosave[0] = 0;
    transcript_free(t->rec);
    t->rec = NULL;
    pthread_mutex_destroy(&t->rec_lock);
}

void record_token(tui *t, const moe_token_trace *tr, int prompt)
{
    pthread_mutex_lock(&t->rec_lock);
    transcript_set_prompt(t->rec, prompt);
    transcript_add_token(t->rec, tr);
    t->rec_dirty = 1;
    pthread_mutex_unlock(&t->rec_lock);
}

void record_turn(tui *t, const char *role, const char *text)
{
    pthread_mutex_lock(&t->rec_lock);
    int i = transcript_add_turn(t->rec, role, text);
    t->rec_turn = strcmp(role, "assistant") ? -1 : i;
    t->rec_dirty = 1;
    pthread_mutex_unlock(&t->rec_lock);
}

void record_reply(tui *t, const char *text, size_t len)
{
    pthread_mutex_lock(&t->rec_lock);
    if (t->rec_turn >= 0)
        transcript_turn_append(t->rec, t->rec_turn, text, len);
    t->rec_dirty = 1;
    pthread_mutex_unlock(&t->rec_lock);
}

void record_controls(tui *t)
{
    int n;
    const moe_control_event *log = moe_session_control_log(t->s, &n);
    pthread_mutex_lock(&t->rec_lock);
    transcript_sync_controls(t->rec, log, n, 1);
    t->rec_dirty = 1;
    pthread_mutex_unlock(&t->rec_lock);
}

int record_restart(tui *t)
{
    transcript *fresh = transcript_new(t->m, t->tok, &t->sp);
    if (!fresh)
        return -1;
    /* the controls in force: the log since its last reset, before token 0 */
    int n, from = 0;
    const moe_control_event *log = moe_session_control_log(t->s, &n);
    for (int i = 0; i < n; i++)
        if (log[i].kind == MOE_CTL_RESET)
            from = i + 1;
    for (int i = from; i < n; i++)
        if (log[i].kind != MOE_CTL_REPREFILL)
            transcript_add_control(fresh, 0, log[i].text, 0);
    transcript_controls_seen(fresh, n);
    pthread_mutex_lock(&t->rec_lock);
    transcript_free(t->rec);
    t->rec = fresh;
    t->rec_turn = -1;
    t->rec_dirty = 1;
    pthread_mutex_unlock(&t->rec_lock);
    return 0;
}

int record_save(tui *t, const char *path, char *msg, size_t len, int *n_tokens)
{
    pthread_mutex_lock(&t->rec_lock);
    int rc = transcript_save(t->rec, path, msg, len);
    *n_tokens = transcript_n_tokens(t->rec);
    pthread_mutex_unlock(&t->rec_lock);
    return rc;
}

void autosave_tick(tui *t, int urgent)
{
    if (!t->autosave[0] || t->autosave_off)
        return;
    pthread_mutex_lock(&t->rec_lock);
    double tn = now();
    /* Small: after every token, unless the last save took more than a
     * hundredth of the time since it (a fast model); large: on a timer. */
    double gap = t->rec_bytes < AUTOSAVE_SMALL ? AUTOSAVE_COST * t->rec_save_secs : AUTOSAVE_PERIOD;
    int due = t->rec_dirty && (urgent || tn - t->rec_saved_at >= gap);
    if (due && (transcript_n_tokens(t->rec) || transcript_n_turns(t->rec))) {
        char msg[512];
        /* between tokens quickly (no fsync: a process crash keeps the
         * file whole); at turns and on demand, durably */
        int saved = urgent ? transcript_save(t->rec, t->autosave, msg, sizeof msg)
                           : transcript_save_quick(t->rec, t->autosave, msg, sizeof msg);
        if (saved == 0) {
            if (!urgent) /* the pace of the quick saves: a durable one's fsync says nothing of theirs */
                t->rec_save_secs = now() - tn;
            struct stat st;
            t->rec_bytes = stat(t->autosave, &st) == 0 ? (long)st.st_size : 0;
            t->autosave_err = 0;
        } else if (!t->autosave_err) { /* said once, not at every token */
            t->autosave_err = 1;
            pthread_mutex_unlock(&t->rec_lock);
            tui_message(t, 1, "autosave: %s", msg);
            pthread_mutex_lock(&t->rec_lock);
        }
        t->rec_saved_at = tn;
        t->rec_dirty = 0;
    }
    pthread_mutex_unlock(&t->rec_lock);
}

void autosave_remove(tui *t)
{
    if (t->autosave[0] && !t->autosave_off)
        unlink(t->autosave);
}

transcript *autosave_find(tui *t, char *msg, size_t len)
{
    msg[0] = 0;
    if (!t->autosave[0] || access(t->autosave, F_OK) != 0)
        return NULL;
    transcript *old = transcript_load(t->autosave, msg, len);
    if (!old)
        return NULL;
    const transcript_model *m = transcript_model_get(old);
    const moe_model_info *in = t->info;
    if (strcmp(m->arch, in->arch) || m->n_layers != in->n_layers || m->n_experts != in->n_experts ||
        m->n_moe_layers != in->n_moe_layers || (m->vocab && m->vocab != in->vocab)) {
        snprintf(msg, len, "the unsaved session in %s was made with %s (%s); start moescope %s to restore it",
                 t->autosave, m->path, m->arch, m->path);
        transcript_free(old);
        return NULL;
    }
    if (!transcript_n_tokens(old)) {
        transcript_free(old);
        return NULL;
    }
    return old;
}

/* ---- restoring ------------------------------------------------------------ */

static const char *static_role(const char *role)
{
    return !strcmp(role, "system") ? "system" : !strcmp(role, "assistant") ? "assistant" : "user";
}

/* The worker's side of a restore: evaluate old's tokens into the reset
 * session as they were evaluated (a prompt at a time, controls and turns
 * at the positions they happened), so that the KV cache, the sampler's
 * history, the screen and the record are where the old session left
 * them. Takes old. */
void restore_job(tui *t, transcript *old)
{
    int n = transcript_n_tokens(old), nt = transcript_n_turns(old), nc = transcript_n_controls(old);
    int32_t *ids = malloc((size_t)(n ? n : 1) * sizeof *ids);
    char msg[1024] = ""; /* room for an engine error's message */
    moe_error err = {0};
    int capacity = 0, ok = ids != NULL;
    for (int i = 0; i < nc; i++)
        capacity |= !strncmp(transcript_control_at(old, i)->change, "capacity", 8);
    pthread_mutex_lock(&t->sess_lock);
    if (n >= moe_session_n_ctx(t->s)) {
        snprintf(msg, sizeof msg, "the unsaved session has %d tokens, more than the context (%d): -c sets it", n,
                 moe_session_n_ctx(t->s));
        ok = 0;
    }
    if (ok) {
        moe_session_reset(t->s);
        moe_session_reset_controls(t->s);
        chat_clear(&t->chat);
        chat_set_system(&t->chat, NULL); /* the old session's own, if it had one, comes with its turns */
        pthread_mutex_lock(&t->lock);
        convo_clear(&t->conv);
        pthread_mutex_unlock(&t->lock);
        record_restart(t);
    }
    int ic = 0, it = 0;
    for (int i = 0; ok && i <= n && !t->stop;) {
        for (; ic < nc && transcript_control_at(old, ic)->pos <= i; ic++)
            if (control_apply_logged(t->s, transcript_control_at(old, ic)->change, msg, sizeof msg)) {
                ok = 0;
                break;
            }
        record_controls(t);
        for (; ok && it < nt && transcript_turn_at(old, it)->token <= i; it++) {
            const transcript_turn *u = transcript_turn_at(old, it);
            record_turn(t, u->role, u->text);
            if (t->chat.on && !strcmp(u->role, "system"))
                chat_set_system(&t->chat, u->text);
            else if (t->chat.on) /* the template renders them for the next prompt */
                chat_add_turn(&t->chat, static_role(u->role), u->text, strlen(u->text));
        }
        if (!ok || i == n)
            break;
        /* one eval per prompt run (split where a turn, a control or a
         * generated token begins); generated tokens one at a time under a
         * capacity control, whose batches must be as they were */
        int prompt = transcript_token_at(old, i)->prompt, j = i + 1;
        int stop_at = n;
        if (ic < nc && transcript_control_at(old, ic)->pos < stop_at)
            stop_at = transcript_control_at(old, ic)->pos;
        if (it < nt && transcript_turn_at(old, it)->token < stop_at)
            stop_at = transcript_turn_at(old, it)->token;
        while (j < stop_at && transcript_token_at(old, j)->prompt == prompt && (prompt || !capacity))
            j++;
        for (int q = i; q < j; q++)
            ids[q] = transcript_token_at(old, q)->id;
        pthread_mutex_lock(&t->lock);
        t->conv.prompt_mode = prompt;
        pthread_mutex_unlock(&t->lock);
        if (moe_session_eval(t->s, ids + i, j - i, &err)) {
            snprintf(msg, sizeof msg, "%s", err.msg);
            ok = 0;
            break;
        }
        for (int q = i; q < j; q++)
            moe_sampler_accept(t->smp, ids[q]);
        i = j;
    }
    pthread_mutex_lock(&t->lock);
    t->conv.prompt_mode = 0;
    t->need_view = 1;
    pthread_mutex_unlock(&t->lock);
    pthread_mutex_unlock(&t->sess_lock);
    pthread_mutex_lock(&t->rec_lock);
    t->rec_turn = -1;
    pthread_mutex_unlock(&t->rec_lock);
    if (ok && !t->stop) {
        autosave_tick(t, 1);
        tui_message(t, 0, "restored the unsaved session of %s: %d tokens, %d turns, %d control changes",
                    transcript_created(old), n, nt, nc);
    } else {
        tui_message(t, 1, "restore: %s", t->stop ? "stopped; what was evaluated is kept" : msg);
    }
    free(ids);
    transcript_free(old);
}
