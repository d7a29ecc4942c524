/* The explorer's commands: one table (name, arguments, handler, help)
 * shared by the `:` line, the prompt's ":..." lines and the key bindings,
 * which call the same handlers. The control verbs are the CLI's own
 * vocabulary (controls_parse.h), applied between two tokens. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "../controls_parse.h"
#include "tui.h"

void tui_message(tui *t, int err, const char *fmt, ...)
{
    va_list ap;
    pthread_mutex_lock(&t->lock);
    va_start(ap, fmt);
    vsnprintf(t->msg, sizeof t->msg, fmt, ap);
    va_end(ap);
    t->msg_err = err;
    pthread_mutex_unlock(&t->lock);
}

static int off_same(const moe_offset *a, const moe_offset *b)
{
    return a->layer == b->layer && a->kind == b->kind && a->expert == b->expert && a->neuron == b->neuron;
}

/* Called with sess_lock held. */
static void view_refresh_locked(tui *t)
{
    const convo *c = &t->conv; /* route_layer is written only with sess_lock held too */
    for (int r = 0; r < c->n_routes; r++) {
        int layer = c->route_layer[r];
        t->view.k[r] = moe_session_get_k(t->s, layer);
        for (int e = 0; e < c->n_experts; e++)
            t->view.on[(size_t)r * c->n_experts + e] = (uint8_t)moe_session_expert_on(t->s, layer, e);
    }
    /* Update the list in place, so rows keep their order: muted entries
     * stay, the others take the engine's delta or go; new ones go last. */
    int n;
    const moe_offset *off = moe_session_offsets(t->s, &n);
    int nk = 0;
    for (int i = 0; i < t->n_steer; i++) {
        steer_entry *se = &t->steer[i];
        int found = -1;
        for (int j = 0; j < n && found < 0; j++)
            if (off_same(&se->o, &off[j]))
                found = j;
        if (found >= 0) {
            se->o.delta = off[found].delta;
            se->muted = 0;
        }
        if (found >= 0 || se->muted)
            t->steer[nk++] = *se;
    }
    for (int j = 0; j < n && nk < MAX_STEER; j++) {
        int dup = 0;
        for (int i = 0; i < nk; i++)
            dup |= off_same(&t->steer[i].o, &off[j]);
        if (!dup)
            t->steer[nk++] = (steer_entry){off[j], 0};
    }
    t->n_steer = nk;
    if (t->sel_steer >= nk)
        t->sel_steer = nk ? nk - 1 : 0;
}

void view_refresh(tui *t)
{
    if (t->review) /* no session: the controls stay as the model says */
        return;
    pthread_mutex_lock(&t->sess_lock);
    view_refresh_locked(t);
    pthread_mutex_unlock(&t->sess_lock);
}

int command_control(tui *t, const char *verb, const char *arg)
{
    char msg[512];
    if (t->review) {
        tui_message(t, 1, "review mode: no model");
        return KEY_REDRAW;
    }
    pthread_mutex_lock(&t->sess_lock);
    int rc = control_apply(t->s, verb, arg, msg, sizeof msg);
    if (!rc)
        record_controls(t);
    int nlog = 0;
    const moe_control_event *log = moe_session_control_log(t->s, &nlog);
    if (!rc && nlog)
        snprintf(msg, sizeof msg, "%s (from token %d)", log[nlog - 1].text, log[nlog - 1].pos);
    else if (!rc)
        snprintf(msg, sizeof msg, "%s %s", verb, arg);
    view_refresh_locked(t);
    pthread_mutex_unlock(&t->sess_lock);
    tui_message(t, rc != 0, "%s", msg);
    return KEY_REDRAW;
}

typedef struct {
    const char *name, *alias, *args, *help;
    int (*run)(tui *t, const char *verb, const char *arg);
    int model;                 /* needs the model: refused in review mode */
} command;

static int cmd_ctl(tui *t, const char *verb, const char *arg)
{
    if (!*arg) {
        tui_message(t, 1, "%s needs an argument (see F1)", verb);
        return KEY_REDRAW;
    }
    return command_control(t, verb, arg);
}

static int cmd_colour(tui *t, const char *verb, const char *arg)
{
    (void)verb;
    if (!strcmp(arg, "vote") || !*arg) {
        t->colour_layer = -1;
        tui_message(t, 0, "colour: the layers' majority vote");
        return KEY_REDRAW;
    }
    char *end;
    long l = strtol(arg[0] == 'L' || arg[0] == 'l' ? arg + 1 : arg, &end, 10);
    int r = -1;
    for (int i = 0; i < t->conv.n_routes; i++)
        if (t->conv.route_layer[i] == l)
            r = i;
    if (*end || r < 0) {
        tui_message(t, 1, "colour: expected vote or an MoE layer, not '%s'", arg);
        return KEY_REDRAW;
    }
    t->colour_layer = r;
    tui_message(t, 0, "colour: top-1 expert of layer %ld", l);
    return KEY_REDRAW;
}

static int cmd_job(tui *t, const char *verb, const char *arg)
{
    (void)arg;
    int job = !strcmp(verb, "reprefill") ? JOB_REPREFILL : JOB_CLEAR;
    if (worker_submit(t, job, NULL))
        tui_message(t, 1, "busy generating: Esc stops it first");
    return KEY_REDRAW;
}

static int cmd_reset(tui *t, const char *verb, const char *arg)
{
    (void)verb;
    (void)arg;
    pthread_mutex_lock(&t->sess_lock);
    moe_session_reset_controls(t->s);
    record_controls(t);
    t->n_steer = 0;
    t->view.forced = -1;
    view_refresh_locked(t);
    pthread_mutex_unlock(&t->sess_lock);
    tui_message(t, 0, "controls reset: all experts on, k as the model says, no offsets");
    return KEY_REDRAW;
}

static int cmd_quit(tui *t, const char *verb, const char *arg)
{
    (void)t;
    (void)verb;
    (void)arg;
    return KEY_QUIT;
}

static int cmd_chat(tui *t, const char *verb, const char *arg)
{
    (void)verb;
    char msg[512];
    int on = !*arg ? !t->chat.on : !strcmp(arg, "on") ? 1 : !strcmp(arg, "off") ? 0 : -1;
    if (on < 0) {
        tui_message(t, 1, "chat: expected on or off, not '%s'", arg);
        return KEY_REDRAW;
    }
    if (t->busy) {
        tui_message(t, 1, "busy generating: Esc stops it first");
        return KEY_REDRAW;
    }
    pthread_mutex_lock(&t->sess_lock);
    int rc = 0;
    if (on && !t->chat.src)
        rc = chat_set_template(t, "model", msg, sizeof msg);
    else if (on)
        snprintf(msg, sizeof msg, "chat: prompts are user turns of the %s template", t->chat.name);
    else
        snprintf(msg, sizeof msg, "raw completion: prompts continue the text");
    if (!rc && t->chat.on != on) {
        t->chat.on = on;
        chat_clear(&t->chat); /* a chat starts from its first turn */
    }
    pthread_mutex_unlock(&t->sess_lock);
    tui_message(t, rc != 0, "%s", msg);
    return KEY_REDRAW;
}

static int cmd_system(tui *t, const char *verb, const char *arg)
{
    (void)verb;
    if (!*arg) {
        tui_message(t, 0, "system: %s", t->chat.system ? t->chat.system : "none (:system TEXT sets one)");
        return KEY_REDRAW;
    }
    if (t->busy) {
        tui_message(t, 1, "busy generating: Esc stops it first");
        return KEY_REDRAW;
    }
    int none = !strcmp(arg, "none");
    pthread_mutex_lock(&t->sess_lock);
    int rc = chat_set_system(&t->chat, none ? NULL : arg);
    pthread_mutex_unlock(&t->sess_lock);
    if (rc)
        tui_message(t, 1, "system: out of memory");
    else if (!t->chat.on)
        tui_message(t, 0, "system message %s; it applies in chat mode (:chat on)", none ? "removed" : "set");
    else
        tui_message(t, 0, "system message %s: the next prompt renders the conversation with it",
                    none ? "removed" : "set");
    return KEY_REDRAW;
}

static int cmd_template(tui *t, const char *verb, const char *arg)
{
    (void)verb;
    char msg[512];
    if (!*arg) {
        tui_message(t, 0, "template: %s (%s); built-ins: %s", t->chat.src ? t->chat.name : "none",
                    t->chat.on ? "chat on" : "chat off", moe_chat_builtin_names());
        return KEY_REDRAW;
    }
    if (t->busy) {
        tui_message(t, 1, "busy generating: Esc stops it first");
        return KEY_REDRAW;
    }
    pthread_mutex_lock(&t->sess_lock);
    int rc = chat_set_template(t, arg, msg, sizeof msg);
    if (!rc)
        chat_clear(&t->chat);
    pthread_mutex_unlock(&t->sess_lock);
    tui_message(t, rc != 0, "%s", msg);
    return KEY_REDRAW;
}

static int cmd_save(tui *t, const char *verb, const char *arg)
{
    (void)verb;
    char def[64], msg[512];
    const char *path = arg;
    if (!*path) { /* a new name each time, in the current directory */
        time_t now = time(NULL);
        struct tm tm;
        strftime(def, sizeof def, "moescope-%Y%m%d-%H%M%S.json", localtime_r(&now, &tm));
        path = def;
    }
    int n;
    if (record_save(t, path, msg, sizeof msg, &n))
        tui_message(t, 1, "save: %s", msg);
    else
        tui_message(t, 0, "saved %d tokens to %s", n, path);
    return KEY_REDRAW;
}

static int cmd_int(tui *t, const char *verb, const char *arg)
{
    char *end;
    long v = strtol(arg, &end, 10);
    if (!*arg || *end || v < 1 || v > 1 << 20) {
        tui_message(t, 1, "%s: expected a positive number, not '%s'", verb, arg);
        return KEY_REDRAW;
    }
    t->n_predict = (int)v;
    tui_message(t, 0, "replies are up to %ld tokens", v);
    return KEY_REDRAW;
}

static int cmd_eos(tui *t, const char *verb, const char *arg)
{
    (void)verb;
    t->ignore_eos = !strcmp(arg, "off");
    tui_message(t, 0, t->ignore_eos ? "generation goes on past end-of-text" : "generation stops at end-of-text");
    return KEY_REDRAW;
}

static int cmd_help(tui *t, const char *verb, const char *arg)
{
    (void)verb;
    (void)arg;
    t->help = 1;
    return KEY_REDRAW;
}

static const command COMMANDS[] = {
    {"k", NULL, "N | L:N", "experts per token, all layers or layer L", cmd_ctl, 1},
    {"off", NULL, "E[,E] | L:E", "switch experts off (all layers or layer L)", cmd_ctl, 1},
    {"on", NULL, "E[,E] | L:E", "switch experts back on", cmd_ctl, 1},
    {"force", NULL, "E[,E] | none", "send every token to these experts", cmd_ctl, 1},
    {"bias", NULL, "E=X | L:E=X", "add X to expert E's router logit", cmd_ctl, 1},
    {"offset", NULL, "L:N=D | L:E:N=D", "add D to a neuron (L:resid:N=D, L:shared:N=D)", cmd_ctl, 1},
    {"capacity", NULL, "C[,drop] | off", "mark (or drop) assignments past capacity", cmd_ctl, 1},
    {"colour", "color", "vote | L", "colour tokens by the layers' vote or layer L", cmd_colour, 0},
    {"reprefill", NULL, "", "run the conversation again under the controls", cmd_job, 1},
    {"clear", "new", "", "start a new conversation", cmd_job, 1},
    {"reset", NULL, "", "lift every control", cmd_reset, 1},
    {"save", "w", "[FILE]", "save the transcript (default moescope-DATE-TIME.json)", cmd_save, 0},
    {"n", "tokens", "N", "tokens per reply", cmd_int, 1},
    {"eos", NULL, "on | off", "stop at end-of-text (on) or go on", cmd_eos, 1},
    {"chat", NULL, "[on | off]", "chat mode: prompts as turns of the template", cmd_chat, 1},
    {"template", NULL, "[NAME | FILE]", "chat template: model, chatml, llama3, ...", cmd_template, 1},
    {"system", NULL, "[TEXT | none]", "chat: the system message (shown without TEXT)", cmd_system, 1},
    {"help", NULL, "", "this help", cmd_help, 0},
    {"quit", "q", "", "leave moescope", cmd_quit, 0},
};
#define N_COMMANDS (int)(sizeof COMMANDS / sizeof COMMANDS[0])

int command_exists(const char *line)
{
    while (*line == ' ' || *line == ':')
        line++;
    size_t n = strcspn(line, " ");
    for (int i = 0; i < N_COMMANDS; i++)
        if ((strlen(COMMANDS[i].name) == n && !strncmp(line, COMMANDS[i].name, n)) ||
            (COMMANDS[i].alias && strlen(COMMANDS[i].alias) == n && !strncmp(line, COMMANDS[i].alias, n)))
            return 1;
    return 0;
}

int command_run(tui *t, const char *line)
{
    char buf[256];
    while (*line == ' ' || *line == ':')
        line++;
    snprintf(buf, sizeof buf, "%s", line);
    size_t len = strlen(buf);
    while (len && buf[len - 1] == ' ')
        buf[--len] = 0;
    if (!len)
        return KEY_REDRAW;
    char *arg = strchr(buf, ' ');
    if (arg) {
        *arg++ = 0;
        while (*arg == ' ')
            arg++;
    } else {
        arg = buf + len;
    }
    for (int i = 0; i < N_COMMANDS; i++)
        if (!strcmp(buf, COMMANDS[i].name) || (COMMANDS[i].alias && !strcmp(buf, COMMANDS[i].alias)))
            return t->review && COMMANDS[i].model ? (tui_message(t, 1, "review mode: no model"), KEY_REDRAW)
                                                  : COMMANDS[i].run(t, COMMANDS[i].name, arg);
    tui_message(t, 1, "unknown command '%s' (F1 lists them)", buf);
    return KEY_REDRAW;
}

int command_help(char lines[][96], int max)
{
    int n = 0;
    for (int i = 0; i < N_COMMANDS && n < max; i++, n++)
        snprintf(lines[n], 96, ":%-9s %-15s %s", COMMANDS[i].name, COMMANDS[i].args, COMMANDS[i].help);
    return n;
}
