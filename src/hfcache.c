/* Finding a Hugging Face model id in the local hub cache.
 *
 * The cache keeps each repository as models--ORG--NAME/ with snapshots/REV/
 * directories and refs/main naming the revision a download last resolved.
 * Like huggingface_hub, we prefer refs/main; a cache without it gives its
 * newest snapshot. */
#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "error.h"

static int is_dir(const char *p)
{
    struct stat st;
    return stat(p, &st) == 0 && S_ISDIR(st.st_mode);
}

/* The hub cache directory, by the precedence huggingface_hub uses. */
static int hub_dir(char *buf, size_t cap)
{
    const char *v;
    if ((v = getenv("HF_HUB_CACHE")) && *v)
        return snprintf(buf, cap, "%s", v) < (int)cap;
    if ((v = getenv("HF_HOME")) && *v)
        return snprintf(buf, cap, "%s/hub", v) < (int)cap;
    if ((v = getenv("XDG_CACHE_HOME")) && *v)
        return snprintf(buf, cap, "%s/huggingface/hub", v) < (int)cap;
    if ((v = getenv("HOME")) && *v)
        return snprintf(buf, cap, "%s/.cache/huggingface/hub", v) < (int)cap;
    return 0;
}

moe_status moe_hf_resolve(const char *id, char *buf, size_t buflen, moe_error *err)
{
    char hub[2048], repo[3072];
    if (!hub_dir(hub, sizeof hub))
        return moe_fail(err, MOE_EIO, "%s: no Hugging Face cache directory (set HF_HUB_CACHE or HF_HOME)", id);
    /* "org/name" becomes "models--org--name". */
    int n = snprintf(repo, sizeof repo, "%s/models--", hub);
    for (const char *p = id; *p && n < (int)sizeof repo - 3; p++) {
        if (*p == '/') {
            repo[n++] = '-';
            repo[n++] = '-';
        } else {
            repo[n++] = *p;
        }
    }
    repo[n] = 0;
    if (!is_dir(repo))
        return moe_fail(err, MOE_EIO,
                        "%s: not a directory and not in the Hugging Face cache (looked for %s); "
                        "download it first, e.g. with `huggingface-cli download %s`",
                        id, repo, id);

    char path[4096], rev[256] = "";
    snprintf(path, sizeof path, "%s/refs/main", repo);
    FILE *f = fopen(path, "r");
    if (f) {
        if (fgets(rev, sizeof rev, f))
            rev[strcspn(rev, "\r\n")] = 0;
        fclose(f);
        if (strchr(rev, '/') || strstr(rev, ".."))
            rev[0] = 0;
        snprintf(path, sizeof path, "%s/snapshots/%s", repo, rev);
        if (rev[0] && is_dir(path)) {
            if (snprintf(buf, buflen, "%s", path) >= (int)buflen)
                return moe_fail(err, MOE_EINVAL, "%s: cache path too long", id);
            return MOE_OK;
        }
    }

    snprintf(path, sizeof path, "%s/snapshots", repo);
    DIR *d = opendir(path);
    if (!d)
        return moe_fail(err, MOE_EIO, "%s: %s: %s", id, path, strerror(errno));
    struct dirent *de;
    time_t newest = 0;
    char best[4400] = "";
    while ((de = readdir(d))) {
        if (de->d_name[0] == '.')
            continue;
        char snap[4400];
        snprintf(snap, sizeof snap, "%s/%s", path, de->d_name);
        struct stat st;
        if (stat(snap, &st) == 0 && S_ISDIR(st.st_mode) && (!best[0] || st.st_mtime > newest)) {
            newest = st.st_mtime;
            snprintf(best, sizeof best, "%s", snap);
        }
    }
    closedir(d);
    if (!best[0])
        return moe_fail(err, MOE_EIO, "%s: the cache entry %s has no snapshot", id, repo);
    if (snprintf(buf, buflen, "%s", best) >= (int)buflen)
        return moe_fail(err, MOE_EINVAL, "%s: cache path too long", id);
    return MOE_OK;
}
