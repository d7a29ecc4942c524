/* The generation worker: one thread that runs the model so the screen never
 * waits for it. It takes one job at a time (a prompt to continue, a
 * re-prefill, a new conversation), evaluates token by token under the
 * session lock, records routing through the trace sink (into the screen's
 * conversation and the session's transcript, record.c), autosaves, and
 * pokes the UI through a pipe after every token. `stop` ends a generation
 * (or a restore) between two tokens. */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "tui.h"

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

void worker_wake(tui *t)
{
    char c = 1;
    ssize_t w = write(t->wake_fd[1], &c, 1); /* a full pipe already says it */
    (void)w;
}

static void on_token(void *ctx, const moe_token_trace *tr)
{
    tui *t = ctx;
    pthread_mutex_lock(&t->lock);
    convo_add(&t->conv, tr);
    int prompt = t->conv.prompt_mode;
    pthread_mutex_unlock(&t->lock);
    record_token(t, tr, prompt);
    /* One wake per frame at most: at thousands of tokens a second, a wake
     * per token cost about a tenth of the generation speed on two cores
     * (the UI thread preempting the pool's). */
    if (atomic_fetch_add(&t->tokens_undrawn, 1) == 0)
        worker_wake(t);
}

static void fail(tui *t, const moe_error *err)
{
    tui_message(t, 1, "engine: %s", err->msg);
}

/* "#1,5,9" (or spaces between): a prompt of token ids, for models
 * without a tokenizer. 0, or -1 with err filled. */
static int parse_ids(const char *s, int vocab, int32_t **ids, int *n, moe_error *err)
{
    size_t cap = strlen(s) / 2 + 1;
    *ids = malloc(cap * sizeof **ids), *n = 0;
    if (!*ids) {
        snprintf(err->msg, sizeof err->msg, "out of memory");
        return -1;
    }
    for (const char *p = s + 1; *p;) {
        if (*p == ',' || *p == ' ') {
            p++;
            continue;
        }
        char *end;
        long v = strtol(p, &end, 10);
        if (end == p || v < 0 || v >= vocab) {
            snprintf(err->msg, sizeof err->msg, "token ids: expected #ID,ID,... with 0 <= ID < %d, at '%.20s'",
                     vocab, p);
            free(*ids);
            *ids = NULL, *n = 0;
            return -1;
        }
        (*ids)[(*n)++] = (int32_t)v;
        p = end;
    }
    return 0;
}

/* The tokens of a prompt: ids[*from..n) are evaluated. In raw mode they
 * continue the cache (*from 0). In chat mode the whole conversation is
 * rendered again; when the cache holds a prefix of it, only the new suffix
 * is evaluated (*from = the cache's length), otherwise the session starts
 * over (*from 0, *reset 1). Called with sess_lock held. */
static int prompt_ids(tui *t, const char *text, int32_t **ids, int *n, int *from, int *reset, moe_error *err)
{
    int pos = moe_session_pos(t->s);
    *from = 0, *reset = 0;
    if (text[0] == '#' && text[1] >= '0' && text[1] <= '9')
        return parse_ids(text, t->info->vocab, ids, n, err);
    if (!t->tok) {
        snprintf(err->msg, sizeof err->msg,
                 "this model has no tokenizer (tokenizer.json or a GGUF vocabulary): type token ids instead, as #1,5,9");
        return -1;
    }
    if (!t->chat.on)
        return moe_tokenizer_encode(t->tok, text, strlen(text), pos == 0, ids, n, err) ? -1 : 0;
    if (chat_render_ids(t, text, ids, n, err))
        return -1;
    int same = *n > pos;
    pthread_mutex_lock(&t->lock);
    same &= t->conv.n == pos;
    for (int i = 0; same && i < pos; i++)
        same = t->conv.tok[i].id == (*ids)[i];
    pthread_mutex_unlock(&t->lock);
    *from = same ? pos : 0;
    *reset = !same && pos > 0;
    return 0;
}

static void generate(tui *t, const char *text)
{
    moe_error err = {0};
    int32_t *ids = NULL, *gen = NULL;
    int n = 0, from = 0, reset = 0, chat = 0;
    pthread_mutex_lock(&t->sess_lock);
    int pos = moe_session_pos(t->s);
    if (prompt_ids(t, text, &ids, &n, &from, &reset, &err)) {
        pthread_mutex_unlock(&t->sess_lock);
        tui_message(t, 1, "%s", err.msg);
        return;
    }
    chat = t->chat.on && ids && text[0] != '#';
    if (n - from <= 0) {
        if (chat)
            free((char *)t->chat.turns[--t->chat.n_turns].content);
        pthread_mutex_unlock(&t->sess_lock);
        free(ids);
        tui_message(t, 1, "the prompt is empty");
        return;
    }
    int need = (reset ? 0 : pos) + n - from;
    if (need >= moe_session_n_ctx(t->s)) {
        if (chat)
            free((char *)t->chat.turns[--t->chat.n_turns].content);
        pthread_mutex_unlock(&t->sess_lock);
        free(ids);
        tui_message(t, 1, "the context is full (%d of %d tokens): :clear starts a new conversation", need,
                    moe_session_n_ctx(t->s));
        return;
    }
    if (reset) { /* the template rendered the history otherwise: start over */
        moe_session_reset(t->s);
        pthread_mutex_lock(&t->lock);
        convo_clear(&t->conv);
        pthread_mutex_unlock(&t->lock);
        record_restart(t);
    }
    if (chat && (reset || pos == 0) && t->chat.system)
        record_turn(t, "system", t->chat.system);
    if (reset)
        for (int i = 0; i + 1 < t->chat.n_turns; i++) /* all rendered again from token 0 */
            record_turn(t, t->chat.turns[i].role, t->chat.turns[i].content);
    record_turn(t, "user", text);
    pthread_mutex_lock(&t->lock);
    t->conv.prompt_mode = 1;
    pthread_mutex_unlock(&t->lock);
    moe_status st = moe_session_eval(t->s, ids + from, n - from, &err);
    for (int i = from; i < n && !st; i++)
        moe_sampler_accept(t->smp, ids[i]);
    pthread_mutex_lock(&t->lock);
    t->conv.prompt_mode = 0;
    pthread_mutex_unlock(&t->lock);
    if (st && chat)
        free((char *)t->chat.turns[--t->chat.n_turns].content);
    pthread_mutex_unlock(&t->sess_lock);
    free(ids);
    if (st) {
        fail(t, &err);
        return;
    }
    autosave_tick(t, 1);
    record_turn(t, "assistant", "");
    char how[96] = "";
    if (chat && reset)
        snprintf(how, sizeof how, "; chat: re-prefilled %d tokens", n);
    else if (chat && from)
        snprintf(how, sizeof how, "; chat: %d new prompt tokens after %d cached", n - from, from);
    else if (chat)
        snprintf(how, sizeof how, "; chat: %d prompt tokens", n);
    int eos = t->info->eos_id, eos2 = t->tok ? moe_tokenizer_eos(t->tok) : -1, n_gen = 0, n_reply = 0;
    gen = malloc((size_t)t->n_predict * sizeof *gen);
    double t0 = now();
    const char *why = "done";
    while (n_gen < t->n_predict) {
        if (t->stop) {
            why = "stopped";
            break;
        }
        pthread_mutex_lock(&t->sess_lock);
        if (moe_session_pos(t->s) >= moe_session_n_ctx(t->s)) {
            pthread_mutex_unlock(&t->sess_lock);
            why = "context full";
            break;
        }
        int32_t id = moe_sampler_sample(t->smp, moe_session_logits(t->s));
        moe_sampler_accept(t->smp, id);
        st = moe_session_eval(t->s, &id, 1, &err);
        pthread_mutex_unlock(&t->sess_lock);
        if (st) {
            fail(t, &err);
            why = NULL;
            break;
        }
        n_gen++;
        double dt = now() - t0;
        pthread_mutex_lock(&t->lock);
        t->tok_s = dt > 0 ? n_gen / dt : 0;
        pthread_mutex_unlock(&t->lock);
        /* the tokenizer's end-of-generation ids: EOS, and a GGUF file's EOT, EOM... */
        int eog = t->tok && moe_tokenizer_is_eog(t->tok, id);
        int eot = chat && chat_is_stop(&t->chat, id);
        if ((id == eos || eog || eot) && !t->ignore_eos) {
            why = id == eos || id == eos2 ? "end of text" : "end of turn";
            break;
        }
        if (gen)
            gen[n_reply++] = id;
        size_t len = 0;
        const char *piece = t->tok ? moe_tokenizer_piece(t->tok, id, &len) : NULL;
        char idbuf[16];
        if (!piece) /* no tokenizer: the reply is its ids, as the prompt was */
            len = (size_t)snprintf(idbuf, sizeof idbuf, "%s%d", n_reply > 1 ? "," : "#", (int)id), piece = idbuf;
        record_reply(t, piece, len);
        autosave_tick(t, 0); /* before the next token: a crash loses at most that one */
    }
    if (chat) { /* the reply is a turn, whatever ended it */
        pthread_mutex_lock(&t->sess_lock);
        chat_add_reply(t, gen, n_reply);
        pthread_mutex_unlock(&t->sess_lock);
    }
    free(gen);
    autosave_tick(t, 1);
    if (why)
        tui_message(t, 0, "%s: %d tokens, %.1f tok/s%s", why, n_gen, t->tok_s, how);
}

static void *worker_main(void *arg)
{
    tui *t = arg;
    pthread_mutex_lock(&t->lock);
    for (;;) {
        while (!t->job && !t->quit_worker)
            pthread_cond_wait(&t->cond, &t->lock);
        if (t->quit_worker)
            break;
        int job = t->job;
        char *text = t->job_text;
        transcript *old = t->job_old;
        t->job_text = NULL;
        t->job_old = NULL;
        t->busy = 1;
        t->stop = 0;
        pthread_mutex_unlock(&t->lock);
        worker_wake(t);

        moe_error err = {0};
        if (job == JOB_GENERATE) {
            generate(t, text);
        } else if (job == JOB_REPREFILL) {
            pthread_mutex_lock(&t->sess_lock);
            moe_status st = moe_session_reprefill(t->s, &err);
            record_controls(t);
            pthread_mutex_unlock(&t->sess_lock);
            if (st)
                fail(t, &err);
            else
                tui_message(t, 0, "re-prefilled the conversation under the current controls");
            autosave_tick(t, 1);
        } else if (job == JOB_CLEAR) {
            pthread_mutex_lock(&t->sess_lock);
            moe_session_reset(t->s);
            chat_clear(&t->chat);
            record_restart(t);
            pthread_mutex_unlock(&t->sess_lock);
            pthread_mutex_lock(&t->lock);
            convo_clear(&t->conv);
            pthread_mutex_unlock(&t->lock);
            tui_message(t, 0, "new conversation");
        } else if (job == JOB_RESTORE) {
            restore_job(t, old);
            old = NULL;
        }
        free(text);
        transcript_free(old);
        pthread_mutex_lock(&t->lock);
        t->busy = 0;
        t->job = JOB_NONE;
        worker_wake(t);
    }
    pthread_mutex_unlock(&t->lock);
    return NULL;
}

int worker_start(tui *t)
{
    if (pipe(t->wake_fd))
        return -1;
    for (int i = 0; i < 2; i++) {
        fcntl(t->wake_fd[i], F_SETFL, fcntl(t->wake_fd[i], F_GETFL) | O_NONBLOCK);
        fcntl(t->wake_fd[i], F_SETFD, FD_CLOEXEC);
    }
    moe_trace_sink sink = {t, on_token};
    moe_session_set_trace(t->s, &sink);
    /* Signals (resize, Ctrl-C from outside, termination) go to the UI
     * thread, whose poll() they must interrupt. */
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_BLOCK, &all, &old);
    int rc = pthread_create(&t->thread, NULL, worker_main, t);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    return rc ? -1 : 0;
}

void worker_stop(tui *t)
{
    pthread_mutex_lock(&t->lock);
    t->quit_worker = 1;
    t->stop = 1;
    pthread_cond_signal(&t->cond);
    pthread_mutex_unlock(&t->lock);
    pthread_join(t->thread, NULL);
    close(t->wake_fd[0]);
    close(t->wake_fd[1]);
}

int worker_submit(tui *t, int job, const char *text)
{
    pthread_mutex_lock(&t->lock);
    if (t->busy || t->job) {
        pthread_mutex_unlock(&t->lock);
        return -1;
    }
    t->job = job;
    t->job_text = text ? strdup(text) : NULL;
    t->busy = 1; /* from now: the screen shows it at once */
    pthread_cond_signal(&t->cond);
    pthread_mutex_unlock(&t->lock);
    return 0;
}

int worker_submit_restore(tui *t, transcript *old)
{
    pthread_mutex_lock(&t->lock);
    if (t->busy || t->job) {
        pthread_mutex_unlock(&t->lock);
        return -1;
    }
    t->job = JOB_RESTORE;
    t->job_old = old;
    t->busy = 1;
    pthread_cond_signal(&t->cond);
    pthread_mutex_unlock(&t->lock);
    return 0;
}
