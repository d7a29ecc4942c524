/* Session transcripts (ui/transcript.c): a real session on the mixtral-tiny
 * fixture recorded, saved and loaded back identical; the digest against
 * FIPS 180-4's examples; atomic saves that fail (a vanished directory, a
 * full disk simulated with RLIMIT_FSIZE, a read-only directory) leaving the
 * old file and the transcript in memory intact; the broken-transcript
 * corpus in tests/data/transcripts, each rejected with its message; and
 * every truncation and many corruptions of a good file, none of which may
 * crash (the sanitizer build makes any memory error a failure). */
#include <dirent.h>
#include <errno.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include "moescope/moescope.h"
#include "tap.h"
#include "testutil.h"
#include "transcript.h"


/* The raw routing the engine delivered, to measure what a save loses. */
typedef struct {
    transcript *t;
    float probs[64][3][8];
    int n;
} recorder;

static void rec_token(void *ctx, const moe_token_trace *tt)
{
    recorder *r = ctx;
    transcript_add_token(r->t, tt);
    if (tt->pos < 64 && tt->n_routes == 3)
        for (int l = 0; l < 3; l++)
            memcpy(r->probs[tt->pos][l], tt->routes[l].probs, sizeof r->probs[0][0]);
    if (tt->pos + 1 > r->n)
        r->n = tt->pos + 1;
}


static void spit(const char *path, const char *buf, size_t len)
{
    FILE *f = fopen(path, "wb");
    fwrite(buf, 1, len, f);
    fclose(f);
}

static int count_entries(const char *dir)
{
    DIR *d = opendir(dir);
    int n = 0;
    for (struct dirent *e; d && (e = readdir(d));)
        n += e->d_name[0] != '.';
    if (d)
        closedir(d);
    return n;
}

static void test_sha256(void)
{
    char tmp[] = "/tmp/moescope-sha-XXXXXX", hex[65];
    int fd = mkstemp(tmp);
    ok(fd >= 0 && write(fd, "abc", 3) == 3, "wrote a test file");
    close(fd);
    ok(transcript_sha256_file(tmp, hex) == 0 &&
           !strcmp(hex, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"),
       "SHA-256 of \"abc\" is FIPS 180-4's (%s)", hex);
    const char *two = "abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq";
    spit(tmp, two, strlen(two));
    ok(transcript_sha256_file(tmp, hex) == 0 &&
           !strcmp(hex, "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1"),
       "SHA-256 of the two-block example is FIPS 180-4's");
    spit(tmp, "", 0);
    ok(transcript_sha256_file(tmp, hex) == 0 &&
           !strcmp(hex, "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"),
       "SHA-256 of the empty file");
    unlink(tmp);
}

/* Record a sampled session with a control change in the middle and
 * capacity marks on, as a front end would. */
static transcript *record(const char *model, recorder *rec)
{
    moe_model *m = NULL;
    moe_session *s = NULL;
    moe_sampler *smp = NULL;
    moe_tokenizer *tok = NULL;
    moe_error err = {0};
    moe_session_params p = {64, 2, 0};
    moe_sampler_params sp = moe_sampler_defaults();
    sp.temp = 0.9f;
    sp.seed = 18446744073709551557ull; /* needs all 64 bits */
    if (moe_model_open(model, &m, &err) || moe_session_new(m, &p, &s, &err) ||
        moe_sampler_new(&sp, moe_model_info_get(m)->vocab, &smp, &err) || moe_tokenizer_open(model, &tok, &err)) {
        ok(0, "open %s: %s", model, err.msg);
        return NULL;
    }
    transcript *t = transcript_new(m, tok, &sp);
    rec->t = t;
    moe_trace_sink sink = {rec, rec_token};
    moe_session_set_trace(s, &sink);
    moe_session_set_capacity(s, 1.0, 0, NULL);
    int32_t *ids = NULL;
    int n = 0;
    const char *prompt = "Programs are free, \"quoted\" \\ and <b>bold</b>.";
    moe_tokenizer_encode(tok, prompt, strlen(prompt), 1, &ids, &n, NULL);
    transcript_add_turn(t, "user", prompt);
    transcript_set_prompt(t, 1);
    int nlog;
    const moe_control_event *log = moe_session_control_log(s, &nlog);
    transcript_sync_controls(t, log, nlog, 0);
    for (int i = 0; i < n; i++)
        moe_sampler_accept(smp, ids[i]);
    moe_session_eval(s, ids, n, NULL);
    transcript_set_prompt(t, 0);
    int reply = transcript_add_turn(t, "assistant", NULL);
    for (int g = 0; g < 10; g++) {
        if (g == 4) {
            moe_session_set_expert(s, 1, 5, 0, NULL);
            moe_session_set_k(s, -1, 3, NULL);
            log = moe_session_control_log(s, &nlog);
            transcript_sync_controls(t, log, nlog, 1);
        }
        int32_t id = moe_sampler_sample(smp, moe_session_logits(s));
        moe_sampler_accept(smp, id);
        moe_session_eval(s, &id, 1, NULL);
        size_t len;
        const char *piece = moe_tokenizer_piece(tok, id, &len);
        if (piece)
            transcript_turn_append(t, reply, piece, len);
    }
    /* a re-prefill sends every token again: routing is replaced, nothing appended */
    int before = transcript_n_tokens(t);
    moe_session_reprefill(s, NULL);
    ok(transcript_n_tokens(t) == before, "a re-prefill overwrites the %d tokens' routing instead of appending", before);
    log = moe_session_control_log(s, &nlog);
    transcript_sync_controls(t, log, nlog, 1);
    free(ids);
    moe_session_free(s);
    moe_sampler_free(smp);
    moe_model_close(m);
    /* the tokenizer must outlive the transcript's recording, not its reading */
    moe_tokenizer_free(tok);
    return t;
}

static void test_round_trip(const char *dir)
{
    char model[4096], a[4200], b[4200], msg[1024] = "";
    snprintf(model, sizeof model, "%s/tests/fixtures/models/mixtral-tiny", test_srcdir());
    recorder *rec = calloc(1, sizeof *rec);
    transcript *t = record(model, rec);
    if (!t) {
        free(rec);
        return;
    }
    const transcript_model *tm = transcript_model_get(t);
    ok(tm->config_sha256 && strlen(tm->config_sha256) == 64, "the model's config.json is digested");
    ok(transcript_n_tokens(t) == rec->n && rec->n > 10, "every token recorded (%d)", rec->n);
    ok(transcript_n_controls(t) == 4 && !strcmp(transcript_control_at(t, 3)->change, "reprefill"),
       "3 control changes and the re-prefill recorded (%d)", transcript_n_controls(t));
    snprintf(a, sizeof a, "%s/a.json", dir);
    snprintf(b, sizeof b, "%s/b.json", dir);
    ok(transcript_save(t, a, msg, sizeof msg) == 0, "save%s%s", *msg ? ": " : "", msg);
    transcript *u = transcript_load(a, msg, sizeof msg);
    ok(u != NULL, "load what was saved%s%s", u ? "" : ": ", u ? "" : msg);
    if (!u)
        goto out;
    ok(transcript_version(u) == TRANSCRIPT_VERSION, "version %d", transcript_version(u));
    ok(transcript_compare(t, u, 5.01e-6, msg, sizeof msg) == 0, "loaded equals recorded (probabilities to 5e-6)%s%s",
       *msg ? ": " : "", msg);
    double worst = 0;
    for (int i = 0; i < rec->n && i < 64; i++)
        for (int r = 0; r < 3; r++) {
            moe_route rt;
            transcript_route(u, i, r, &rt);
            for (int e = 0; e < 8; e++)
                worst = fmax(worst, fabs((double)rt.probs[e] - rec->probs[i][r][e]));
        }
    ok(worst <= 1e-4, "every probability within 1e-4 of the engine's (worst %.2g)", worst);
    moe_route rt;
    transcript_route(u, 0, 0, &rt);
    ok(rt.overflow != NULL, "capacity marks survive");
    transcript_route(u, rec->n - 1, 0, &rt);
    ok(rt.k == 3, "k 3 after the change (%d)", rt.k);
    const transcript_control *c = transcript_control_at(u, 1);
    ok(c->time >= 0 && !strcmp(c->change, "off L1:5") && transcript_control_at(u, 0)->time < 0,
       "a mid-session change keeps its time, a change before the start has none");
    ok(!strcmp(transcript_turn_at(u, 0)->text, "Programs are free, \"quoted\" \\ and <b>bold</b>."),
       "turn text with quotes, backslash and markup survives");
    ok(transcript_sampler(u)->seed == 18446744073709551557ull, "a 64-bit seed survives");
    ok(transcript_save(u, b, msg, sizeof msg) == 0, "save the loaded copy");
    transcript *w = transcript_load(b, msg, sizeof msg);
    ok(w && transcript_compare(u, w, 0, msg, sizeof msg) == 0, "saving a loaded transcript loses nothing more%s%s",
       *msg ? ": " : "", msg);
    transcript_free(w);

    /* Failed saves: the old file stays, no temporary is left, the transcript is unharmed. */
    char gone[4300], keep[4300], sub[4200];
    snprintf(sub, sizeof sub, "%s/vanished", dir);
    mkdir(sub, 0755);
    rmdir(sub);
    snprintf(gone, sizeof gone, "%s/t.json", sub);
    ok(transcript_save(t, gone, msg, sizeof msg) != 0 && strstr(msg, gone) != NULL,
       "a save into a vanished directory fails naming the file (%s)", msg);
    snprintf(sub, sizeof sub, "%s/full", dir);
    mkdir(sub, 0755);
    snprintf(keep, sizeof keep, "%s/keep.json", sub);
    spit(keep, "OLD\n", 4);
    signal(SIGXFSZ, SIG_IGN);
    struct rlimit old, small = {2000, 2000};
    getrlimit(RLIMIT_FSIZE, &old);
    small.rlim_max = old.rlim_max;
    setrlimit(RLIMIT_FSIZE, &small);
    int rc = transcript_save(t, keep, msg, sizeof msg);
    setrlimit(RLIMIT_FSIZE, &old);
    size_t len = 0;
    char *content = test_slurp(keep, &len);
    ok(rc != 0 && strstr(msg, "keep.json") && strstr(msg, "write failed"),
       "a save onto a full disk (RLIMIT_FSIZE) fails naming the file (%s)", msg);
    ok(content && len == 4 && !memcmp(content, "OLD\n", 4), "... and the old file is intact");
    ok(count_entries(sub) == 1, "... and no temporary file is left beside it (%d entries)", count_entries(sub));
    free(content);
    if (geteuid() != 0) {
        chmod(sub, 0555);
        rc = transcript_save(t, keep, msg, sizeof msg);
        content = test_slurp(keep, &len);
        ok(rc != 0 && strstr(msg, "keep.json") && content && len == 4, "a read-only directory: refused, old file intact (%s)",
           msg);
        free(content);
        chmod(sub, 0755);
    } else {
        rc = transcript_save(t, "/proc/moescope-transcript.json", msg, sizeof msg);
        ok(rc != 0 && strstr(msg, "/proc/moescope-transcript.json"),
           "running as root: a directory no one may write (/proc) is refused (%s)", msg);
    }
    ok(transcript_save(t, keep, msg, sizeof msg) == 0, "after the failures the same transcript saves");
    w = transcript_load(keep, msg, sizeof msg);
    ok(w && transcript_compare(u, w, 0, msg, sizeof msg) == 0, "... complete");
    transcript_free(w);

    /* Every truncation of a good file is refused without a crash. */
    content = test_slurp(a, &len);
    int refused = 0, tried = 0;
    size_t step = len / 300 + 1;
    for (size_t cut = 0; cut < len - 2; cut += step, tried++) {
        spit(b, content, cut);
        transcript *x = transcript_load(b, msg, sizeof msg);
        refused += !x && strstr(msg, "b.json") != NULL;
        transcript_free(x);
    }
    ok(refused == tried, "%d of %d truncations refused with a message naming the file", refused, tried);
    /* Corrupt bytes: anything may happen but a crash or a leak. */
    srand(7);
    int loaded = 0;
    for (int i = 0; i < 300; i++) {
        char *bad = malloc(len);
        memcpy(bad, content, len);
        for (int j = 0; j < 1 + i % 4; j++)
            bad[(size_t)rand() % len] = "0123456789-e.,:[]{}\"x \\"[rand() % 23];
        spit(b, bad, len);
        transcript *x = transcript_load(b, msg, sizeof msg);
        loaded += x != NULL;
        transcript_free(x);
        free(bad);
    }
    ok(1, "300 corrupted copies read without a crash (%d still valid)", loaded);
    free(content);
    transcript_free(u);
out:
    transcript_free(t);
    free(rec);
}

/* tests/data/transcripts/EXPECT: "FILE|what the message must say"; an
 * empty expectation means the file must load. */
static void test_corpus(void)
{
    char path[4096], line[1024], msg[1024];
    snprintf(path, sizeof path, "%s/tests/data/transcripts/EXPECT", test_srcdir());
    FILE *f = fopen(path, "r");
    if (!ok(f != NULL, "corpus index %s", path))
        return;
    while (fgets(line, sizeof line, f)) {
        line[strcspn(line, "\n")] = 0;
        char *bar = strchr(line, '|');
        if (!bar || line[0] == '#')
            continue;
        *bar = 0;
        const char *want = bar + 1;
        snprintf(path, sizeof path, "%s/tests/data/transcripts/%s", test_srcdir(), line);
        transcript *t = transcript_load(path, msg, sizeof msg);
        if (!*want)
            ok(t != NULL, "%s loads%s%s", line, t ? "" : ": ", t ? "" : msg);
        else
            ok(!t && strstr(msg, line) && strstr(msg, want), "%s is refused: %s", line, msg);
        transcript_free(t);
    }
    fclose(f);
}

int main(void)
{
    char dir[] = "/tmp/moescope-transcript-XXXXXX";
    if (!mkdtemp(dir))
        return 1;
    test_sha256();
    test_round_trip(dir);
    test_corpus();
    char cmd[256];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    if (system(cmd) != 0)
        diag("could not remove %s", dir);
    return done_testing();
}
