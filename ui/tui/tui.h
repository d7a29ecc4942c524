/* The explorer's shared state: the model and session, the conversation as
 * the router saw it, the generation worker and what the screen shows.
 *
 * Two locks, never held together by the UI thread for long:
 *   sess_lock  the session and sampler: the worker holds it while a token is
 *              evaluated; the UI takes it only to change controls (so a change
 *              lands between two tokens).
 *   lock       the conversation, messages and worker flags: held briefly by
 *              the worker to append a token and by the UI to compose a frame.
 * The UI keeps its own copy of the controls (`view`), refreshed after every
 * change it makes, so drawing never reads the session. */
#ifndef MOE_TUI_H
#define MOE_TUI_H

#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>

#include "../settings.h"
#include "../transcript.h"
#include "convo.h"
#include "moescope/moescope.h"

enum { FOCUS_PROMPT, FOCUS_TRANSCRIPT, FOCUS_EXPERTS, FOCUS_STEER, FOCUS_COUNT };

/* What a key handler or command tells the screen manager. */
enum { KEY_UNHANDLED = 0, KEY_HANDLED = 1, KEY_REDRAW = 2, KEY_QUIT = 4 };

typedef struct {
    moe_offset o;
    int muted;                 /* kept here with its delta; the engine has none */
} steer_entry;

#define MAX_STEER 64
#define PICK_N 8
#define MAX_STOPS 16

/* Chat mode (chat.c): the template, the tokens that end a reply and the
 * conversation's turns. Guarded by sess_lock: the worker renders and
 * appends turns under it; the UI changes the template under it. */
typedef struct {
    int on;                    /* prompts are user turns in the template */
    char *src;                 /* the template's source; NULL: none */
    char name[64];             /* "chatml", "the model's", a file name */
    char *bos, *eos;           /* token texts from tokenizer_config.json, or NULL */
    int32_t stops[MAX_STOPS];  /* end-of-turn strings that are single tokens */
    int n_stops;
    moe_chat_message *turns;   /* (n_turns) roles are static, contents malloc'ed */
    int n_turns, cap_turns;
    char *system;              /* the system message rendered before the turns; NULL none */
} chat_state;

/* What a click can land on, as the last frame laid it out. */
typedef struct {
    int y, x, h, w;
} hit_rect;

typedef struct tui {
    /* engine objects */
    moe_model *m;
    const moe_model_info *info;
    moe_session *s;
    moe_sampler *smp;
    moe_sampler_params sp;
    moe_tokenizer *tok;
    const char *model_name;
    pthread_mutex_t sess_lock;

    /* guarded by lock */
    pthread_mutex_t lock;
    convo conv;
    char msg[512];
    int msg_err;
    double tok_s;              /* generation speed of the latest reply */
    int busy;                  /* the worker is running a job */

    /* the worker (see worker.c) */
    pthread_t thread;
    pthread_cond_t cond;
    int job;                   /* JOB_* pending, under lock */
    char *job_text;
    transcript *job_old;       /* JOB_RESTORE's transcript */
    volatile sig_atomic_t stop;
    int quit_worker;
    int wake_fd[2];            /* worker -> UI: something changed */
    /* tokens since the UI last drew: the worker wakes the UI for the first
     * of them only, so a fast model wakes it once a frame, not per token */
    _Atomic int tokens_undrawn;
    int n_predict;
    int ignore_eos;
    chat_state chat;
    int need_view;             /* under lock: the worker changed the controls (a restore) */

    /* the session's record (record.c), guarded by rec_lock (innermost) */
    pthread_mutex_t rec_lock;
    transcript *rec;           /* in review mode: the transcript under review */
    int rec_turn;              /* the assistant turn being written; -1 none */
    int rec_dirty;             /* changed since the last autosave */
    double rec_saved_at;       /* monotonic time of the last autosave */
    double rec_save_secs;      /* how long it took */
    long rec_bytes;            /* its size */
    int autosave_err;          /* a failed autosave was reported */
    char autosave[4096];       /* the autosave's path; "" none */
    int autosave_fd;           /* holds the flock on its slot while autosave[0] */
    int autosave_off;          /* not now: review mode, or the restore question is open */
    transcript *restore;       /* UI thread: the autosave offered for restoring */

    /* review mode (moescope view FILE): no model, session or worker */
    int review;
    moe_model_info review_info;

    /* UI thread only */
    int focus;
    int cursor;                /* selected token; -1: follow the latest */
    int top_line;              /* first transcript line shown */
    int colour_layer;          /* -1: majority vote over layers; else a layer */
    int sel_route;             /* the router row under the cursor */
    int sel_expert;            /* experts pane row */
    int scope_layer;           /* experts pane acts on: 0 all layers, 1 sel_route's layer */
    int sel_steer;
    steer_entry steer[MAX_STEER];
    int n_steer;
    int picker;                /* the neuron picker is open */
    int pick_sel, pick_n, pick_neuron[PICK_N];
    float pick_val[PICK_N];
    int pick_layer, pick_expert, pick_pos; /* where the picker looked */
    moe_offset_kind pick_kind; /* routed/dense MLP, shared expert or residual */
    int steer_first, steer_rows; /* offsets shown, for clicks */
    int slider_x, slider_w;    /* the sliders' track columns; 0 wide: none */
    int help;
    struct {                   /* the settings file's `bind KEY = COMMAND` */
        int key;               /* a curses key code */
        char name[16];
        char command[96];
    } binds[SETTINGS_MAX_BINDS];
    int n_binds;
    int cmdline;               /* the `:` line is open */
    char cmd[256];
    int cmd_len;
    int confirm_quit;
    int nocolour;
    int cmd_kind;              /* ':' a command, '/' a search */
    char search[128];          /* the last search; "" none */
    int match_first, match_last; /* tokens of the current match; -1 none */
    int mouse;                 /* clicks select (config: mouse = on) */
    hit_rect hit_transcript, hit_router, hit_experts, hit_steer, hit_prompt;
    int router_first, experts_first; /* first rows shown, for clicks */
    struct {                   /* the controls as last applied */
        int *k;                /* (n_routes) */
        uint8_t *on;           /* (n_routes, n_experts) */
        int forced;            /* experts pane: forced expert, -1 none */
    } view;
} tui;

/* ---- worker.c ---- */
enum { JOB_NONE, JOB_GENERATE, JOB_REPREFILL, JOB_CLEAR, JOB_RESTORE };
int worker_start(tui *t);
void worker_stop(tui *t);
/* Queue a job (text is copied). Returns 0, or -1 if the worker is busy. */
int worker_submit(tui *t, int job, const char *text);
/* Queue a restore of the transcript old (taken on success). */
int worker_submit_restore(tui *t, transcript *old);
void worker_wake(tui *t);

/* ---- record.c: the transcript of the session and its autosave ---- */
/* The transcript and the autosave's path (the directory is made). 0, or
 * -1 when out of memory. */
int record_init(tui *t);
void record_done(tui *t);
/* From the trace sink: a token, as a prompt's (1) or generated (0). */
void record_token(tui *t, const moe_token_trace *tr, int prompt);
/* Start a turn; an "assistant" turn then grows with record_reply. */
void record_turn(tui *t, const char *role, const char *text);
void record_reply(tui *t, const char *text, size_t len);
/* Record the session's control changes not recorded yet. sess_lock held. */
void record_controls(tui *t);
/* A new transcript for a session that starts over at token 0, holding the
 * controls in force. sess_lock held. 0, or -1 when out of memory. */
int record_restart(tui *t);
/* Save the record to path; *n_tokens says how many tokens it held. */
int record_save(tui *t, const char *path, char *msg, size_t len, int *n_tokens);
/* Write the autosave if it is due: after every change while it is small,
 * else when urgent (a turn ended) or every 2 s. Any thread. */
void autosave_tick(tui *t, int urgent);
void autosave_remove(tui *t);
/* The autosave of an earlier session, loaded and checked against the
 * model, or NULL (msg says why when there was one that cannot be used). */
transcript *autosave_find(tui *t, char *msg, size_t len);
/* The worker's job: evaluate old (taken) into the session. */
void restore_job(tui *t, transcript *old);

/* ---- chat.c ---- */
/* Append a turn (text copied). 0, or -1 when out of memory. */
int chat_add_turn(chat_state *c, const char *role, const char *text, size_t n);
/* Use the template called name: "model" (the model's own), a built-in
 * (chatml, llama3, ...) or a file; turns chat mode on. Called with
 * sess_lock held. 0, or -1 with the reason in msg (nothing changed). */
int chat_set_template(tui *t, const char *name, char *msg, size_t len);
/* Forget the turns (a new conversation; the system message stays).
 * sess_lock held. */
void chat_clear(chat_state *c);
/* Set the system message (copied; NULL or "" removes it). It is rendered
 * before the turns from the next prompt on. 0, or -1 out of memory.
 * sess_lock held. */
int chat_set_system(chat_state *c, const char *text);
void chat_done(chat_state *c);
/* Append the user's turn, render the whole conversation with the
 * generation prompt and encode it: *ids (malloc'ed) of *n tokens. On
 * failure the turn is taken back and err says why. sess_lock held. */
int chat_render_ids(tui *t, const char *user, int32_t **ids, int *n, moe_error *err);
/* Record the assistant's reply (the generated ids, decoded). sess_lock held. */
void chat_add_reply(tui *t, const int32_t *ids, int n);
/* 1 when id ends an assistant turn under the template. */
int chat_is_stop(const chat_state *c, int32_t id);
/* The name of expert e ("logic") or NULL when experts are numbers. */
const char *tui_expert_name(const tui *t, int e);


/* ---- commands.c ---- */
/* Run one `:` line ("off 3", "k L1:2", "save out.json"). Returns KEY_* flags;
 * the outcome is in t->msg. */
int command_run(tui *t, const char *line);
/* 1 when the line's verb names a command (or its alias). */
int command_exists(const char *line);
/* Apply a control verb under the session lock and refresh the view. */
int command_control(tui *t, const char *verb, const char *arg);
void view_refresh(tui *t);
void tui_message(tui *t, int err, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
/* Lines of help for the overlay: commands. */
int command_help(char lines[][96], int max);

/* ---- panes (pane_*.c): draw into a rectangle; handle a key ---- */
typedef struct {
    int y, x, h, w;
} rect;
/* Drawing helpers (screen.c): a box with a title (bold when focused), and
 * UTF-8 text clipped to maxw columns; returns the columns used. */
void ui_frame(rect r, const char *title, int focused);
int ui_text(int y, int x, const char *s, int maxw);
/* s[0..n) as printable UTF-8: control bytes, quotes and bytes that are not
 * part of a valid character as \xNN; cut to fit out. */
void ui_escape(const char *s, size_t n, char *out, size_t cap);
/* Columns of the UTF-8 string s[0..n). */
int ui_width(const char *s, size_t n);
void pane_transcript_draw(tui *t, rect r);
int pane_transcript_key(tui *t, int key);
/* Select the start of the next (dir 1) or previous (-1) match of
 * t->search in the transcript's text (ASCII case folded), wrapping. */
int search_step(tui *t, int dir);
/* The token drawn at screen cell (y, x) in the last frame, or -1. */
int pane_transcript_hit(const tui *t, int y, int x);
void pane_router_draw(tui *t, rect r);
void pane_usage_draw(tui *t, rect r);
void pane_experts_draw(tui *t, rect r);
int pane_experts_key(tui *t, int key);
void pane_steer_draw(tui *t, rect r);
int pane_steer_key(tui *t, int key);
/* Take the settings' key bindings: names to key codes, checked; a bad one
 * is skipped with a warning added to cfg->warn. */
void screen_bind_keys(tui *t, ui_settings *cfg);
/* A click on row `row` of the steering pane's list at column x: selects
 * the offset (or picker entry); on a slider's track it sets the delta
 * there, on the picker's selected entry it adds that offset. */
int pane_steer_click(tui *t, int row, int x);
/* The selected token (clamped), or -1 when there is none. */
int tui_selected(const tui *t);
/* Key-help tables for the overlay: "key  what it does", NULL-terminated. */
extern const char *const TRANSCRIPT_HELP[], *const EXPERTS_HELP[], *const STEER_HELP[];

/* ---- screen.c ---- */
int screen_run(tui *t);

/* ---- prompt.c: the readline bridge ---- */
int prompt_init(tui *t);
void prompt_done(void);
/* Feed one key; Enter hands the line to the screen (prompt_take_line). */
void prompt_key(int key);
/* A finished line (malloc'ed; caller frees) or NULL. */
char *prompt_take_line(void);
/* The prompt as shown and the cursor column within it. */
const char *prompt_text(int *cursor_byte, const char **line);

#endif
