/*
 * respool_pg.c — PostgreSQL (libpq) adapter: a respool factory of PGconn.
 * See include/respool_pg.h for the contract.
 */
#include "respool_pg.h"
#include "pg_internal.h"

#include <errno.h>
#include <limits.h>
#include <poll.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <fcntl.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define DEFAULT_CONNECT_TIMEOUT_MS 5000L
#define DEFAULT_VALIDATE_IDLE_MS 1000L
#define DEFAULT_PING_TIMEOUT_MS 2000L
#define DEFAULT_RESET_TIMEOUT_MS 5000L
#define MASK "***"

struct respool_pg_factory {
    char **keys; /* NULL-terminated, for PQconnectStartParams */
    char **vals;
    char **secrets; /* passwords to hide in messages, NULL-terminated */
    long connect_timeout_ms;
    long validate_idle_ms; /* ping when idle at least this long (0 = always) */
    long ping_timeout_ms;
    long reset_timeout_ms;
    char *reset_query; /* NULL = none */
    pthread_mutex_t lock; /* guards last_error */
    char last_error[512];
    size_t last_error_len;
};


/* ------------------------------------------------------------------------ */
/* Time                                                                      */
/* ------------------------------------------------------------------------ */

int64_t pg_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Milliseconds left until deadline, for poll(): 0 when passed, capped. */
static int remaining_ms(int64_t deadline)
{
    int64_t left = deadline - pg_now_ms();
    if (left <= 0)
        return 0;
    return left > INT_MAX ? INT_MAX : (int)left;
}

/* Wait for fd to be readable/writable until deadline. 1 = ready, 0 = deadline
 * passed, -1 = poll error (errno). EINTR is retried with the same deadline. */
static int wait_fd(int fd, short events, int64_t deadline)
{
    for (;;) {
        struct pollfd p = {.fd = fd, .events = events, .revents = 0};
        int left = remaining_ms(deadline);
        int rc = poll(&p, 1, left);
        if (rc > 0)
            return 1;
        if (rc == 0) {
            if (left == 0 || remaining_ms(deadline) == 0)
                return 0;
            continue; /* woke early (rounding): wait out the rest */
        }
        if (errno != EINTR)
            return -1;
    }
}

/* ------------------------------------------------------------------------ */
/* Scrubbing passwords out of messages                                       */
/* ------------------------------------------------------------------------ */

struct outbuf {
    char *dst;
    size_t cap, len;
};

static void out_putc(struct outbuf *o, char c)
{
    if (o->cap > 0 && o->len + 1 < o->cap)
        o->dst[o->len++] = c;
}

static void out_puts(struct outbuf *o, const char *s)
{
    while (*s)
        out_putc(o, *s++);
}

static bool is_space(char c)
{
    return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v';
}

/* Length of a "password" value starting at s (after '=' and spaces) in a
 * message: a quoted '...' string with backslash escapes, or up to
 * whitespace (a backslash escapes the next character, as in libpq), '&'
 * (URI query) or '"' (libpq quotes what it echoes). */
static size_t value_len(const char *s)
{
    size_t i = 0;
    if (s[0] == '\'') {
        for (i = 1; s[i] && s[i] != '\''; i++)
            if (s[i] == '\\' && s[i + 1])
                i++;
        return s[i] ? i + 1 : i;
    }
    for (; s[i] && !is_space(s[i]) && s[i] != '&' && s[i] != '"'; i++)
        if (s[i] == '\\' && s[i + 1])
            i++;
    return i;
}

/* At s: "password" [spaces] "=" [spaces] — length of that prefix, or 0. */
static size_t password_key_len(const char *s)
{
    static const char key[] = "password";
    size_t i = sizeof key - 1;
    if (strncasecmp(s, key, i) != 0)
        return 0;
    while (is_space(s[i]))
        i++;
    if (s[i] != '=')
        return 0;
    i++;
    while (s[i] == ' ' || s[i] == '\t')
        i++;
    return i;
}

/* At s: "://" user ":" PASSWORD "@" — set *colon (offset of the ':') and
 * return the offset of the '@', or 0. As libpq, the user info ends at the
 * first '@' before any '/'; whitespace and '"' end it too (a URI quoted in
 * a message). */
static size_t uri_userinfo(const char *s, size_t *colon)
{
    if (strncmp(s, "://", 3) != 0)
        return 0;
    size_t c = 0;
    for (size_t i = 3; s[i]; i++) {
        char ch = s[i];
        if (ch == '@') {
            *colon = c;
            return c ? i : 0;
        }
        if (ch == '/' || ch == '"' || is_space(ch))
            return 0;
        if (ch == ':' && !c)
            c = i;
    }
    return 0;
}

/* Length of the longest known secret at s (secrets are sorted longest
 * first), or 0. */
static size_t secret_at(char *const *secrets, const char *s)
{
    for (char *const *p = secrets; p && *p; p++) {
        size_t n = strlen(*p);
        if (strncmp(s, *p, n) == 0)
            return n;
    }
    return 0;
}

/* Copy src to the outbuf with passwords masked: password=VALUE,
 * scheme://user:PASSWORD@, and every known secret anywhere. */
static void scrub_to(char *const *secrets, const char *src, struct outbuf *o)
{
    size_t i = 0;
    while (src[i]) {
        size_t k;
        /* password=value (also sslpassword=, and ?password= in URIs) */
        if ((i == 0 || !((src[i - 1] >= 'a' && src[i - 1] <= 'z') ||
                         (src[i - 1] >= 'A' && src[i - 1] <= 'Z') || src[i - 1] == '_' ||
                         src[i - 1] == '%')) &&
            (k = password_key_len(src + i)) > 0) {
            for (size_t j = 0; j < k; j++)
                out_putc(o, src[i + j]);
            i += k;
            size_t v = value_len(src + i), known = secret_at(secrets, src + i);
            if (known > v)
                v = known;
            if (v > 0)
                out_puts(o, MASK);
            i += v;
            continue;
        }
        /* scheme://user:password@ */
        size_t colon = 0, at;
        if ((at = uri_userinfo(src + i, &colon)) > 0) {
            for (size_t j = 0; j <= colon; j++)
                out_putc(o, src[i + j]);
            out_puts(o, MASK);
            i += at; /* the '@' is copied next */
            out_putc(o, src[i++]);
            continue;
        }
        /* a known password anywhere */
        if ((k = secret_at(secrets, src + i)) > 0) {
            out_puts(o, MASK);
            i += k;
            continue;
        }
        out_putc(o, src[i++]);
    }
}

/* scrub_to into dst[dstlen] (NUL-terminated when dstlen > 0); returns the
 * length written. */
static size_t scrub_into(char *const *secrets, const char *src, char *dst, size_t dstlen)
{
    struct outbuf o = {.dst = dst, .cap = dstlen, .len = 0};
    scrub_to(secrets, src ? src : "", &o);
    if (o.cap > 0)
        o.dst[o.len] = '\0';
    return o.len;
}

RESPOOL_API char *respool_pg_scrub(const respool_pg_factory_t *f, const char *src, char *dst,
                                   size_t dstlen)
{
    if (!dst || dstlen == 0)
        return dst;
    if (!src)
        src = "";
    /* The mask may be longer than what it hides: scrubbing in place would
     * overtake the input. Work on a copy when the buffers overlap. */
    size_t srclen = strlen(src);
    if (src < dst + dstlen && dst < src + srclen + 1) {
        char *copy = strdup(src);
        if (!copy) {
            dst[0] = '\0';
            return dst;
        }
        scrub_into(f ? f->secrets : NULL, copy, dst, dstlen);
        free(copy);
        return dst;
    }
    scrub_into(f ? f->secrets : NULL, src, dst, dstlen);
    return dst;
}

/* Secret list helpers: a NULL-terminated array of malloc'd strings. */
static int secrets_add(char ***list, size_t *n, const char *s, size_t len)
{
    if (len == 0)
        return 0;
    for (size_t i = 0; i < *n; i++)
        if (strlen((*list)[i]) == len && memcmp((*list)[i], s, len) == 0)
            return 0;
    char **grown = realloc(*list, (*n + 2) * sizeof *grown);
    if (!grown)
        return -1;
    grown[*n] = NULL; /* a valid list even if the copy below fails */
    *list = grown;
    char *copy = malloc(len + 1);
    if (!copy)
        return -1;
    memcpy(copy, s, len);
    copy[len] = '\0';
    grown[(*n)++] = copy;
    grown[*n] = NULL;
    return 0;
}

static void strv_free(char **v)
{
    if (!v)
        return;
    for (char **p = v; *p; p++)
        free(*p);
    free(v);
}

static int hex_value(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

/* Add a secret as written and in the forms libpq may echo it in: with
 * %XX and backslash escapes decoded, and (for one that libpq may split at a
 * URI delimiter) each piece of 3 or more characters. */
static int secrets_add_forms(char ***list, size_t *n, const char *s, size_t len)
{
    if (len == 0)
        return 0;
    if (secrets_add(list, n, s, len) != 0)
        return -1;
    char *decoded = malloc(len + 1);
    if (!decoded)
        return -1;
    size_t d = 0;
    for (size_t i = 0; i < len; i++) {
        if (s[i] == '%' && i + 2 < len && hex_value(s[i + 1]) >= 0 &&
            hex_value(s[i + 2]) >= 0) {
            decoded[d++] = (char)(hex_value(s[i + 1]) * 16 + hex_value(s[i + 2]));
            i += 2;
        } else if (s[i] == '\\' && i + 1 < len) {
            decoded[d++] = s[++i];
        } else {
            decoded[d++] = s[i];
        }
    }
    int rc = secrets_add(list, n, decoded, d);
    free(decoded);
    if (rc != 0)
        return -1;
    size_t start = 0;
    for (size_t i = 0; i <= len; i++) {
        if (i == len || strchr("/?#:@&\"' ", s[i])) {
            if (i - start >= 3 && i - start < len && secrets_add(list, n, s + start, i - start) != 0)
                return -1;
            start = i + 1;
        }
    }
    return 0;
}

/* The password-looking parts of a raw conninfo (which may be malformed, and
 * whose echo in libpq's parse errors must not show them):
 *  - password=VALUE (and sslpassword=): up to unescaped whitespace, or in a
 *    URI query up to '&', with the quotes and without;
 *  - a URI query key that decodes to password or sslpassword (pass%77ord);
 *  - the URI user info's password, read both as libpq does (to the first
 *    '@') and conservatively (to the last '@', '/' included). */
static int raw_secrets(const char *conninfo, char ***list, size_t *n)
{
    bool uri = strncmp(conninfo, "postgresql://", 13) == 0 ||
               strncmp(conninfo, "postgres://", 11) == 0;
    for (size_t i = 0; conninfo[i]; i++) {
        size_t k;
        if ((k = password_key_len(conninfo + i)) > 0) {
            const char *v = conninfo + i + k;
            size_t len = 0;
            if (uri) {
                while (v[len] && v[len] != '&' && v[len] != '#' && !is_space(v[len]))
                    len++;
            } else if (v[0] == '\'') {
                len = value_len(v);
            } else { /* libpq: up to unescaped whitespace */
                while (v[len] && !is_space(v[len]))
                    len += v[len] == '\\' && v[len + 1] ? 2 : 1;
            }
            if (secrets_add_forms(list, n, v, len) != 0)
                return -1;
            if (len >= 2 && v[0] == '\'' &&
                secrets_add_forms(list, n, v + 1, len - (v[len - 1] == '\'' ? 2 : 1)) != 0)
                return -1;
        }
        if (uri && (conninfo[i] == '?' || conninfo[i] == '&')) {
            /* a query parameter: decode its key */
            const char *key = conninfo + i + 1;
            const char *eq = strchr(key, '=');
            size_t keylen = eq ? (size_t)(eq - key) : 0;
            char decoded[32];
            size_t d = 0;
            for (size_t j = 0; j < keylen && d < sizeof decoded - 1; j++) {
                if (key[j] == '%' && j + 2 < keylen && hex_value(key[j + 1]) >= 0 &&
                    hex_value(key[j + 2]) >= 0) {
                    decoded[d++] = (char)(hex_value(key[j + 1]) * 16 + hex_value(key[j + 2]));
                    j += 2;
                } else {
                    decoded[d++] = key[j];
                }
            }
            decoded[d] = '\0';
            if (eq && (strcasecmp(decoded, "password") == 0 ||
                       strcasecmp(decoded, "sslpassword") == 0)) {
                size_t len = strcspn(eq + 1, "&#");
                if (secrets_add_forms(list, n, eq + 1, len) != 0)
                    return -1;
            }
        }
    }
    if (uri) {
        const char *info = strstr(conninfo, "://") + 3;
        const char *colon = strchr(info, ':');
        const char *first_at = strchr(info, '@');
        const char *last_at = strrchr(info, '@');
        if (colon && first_at && colon < first_at) {
            const char *slash = strchr(info, '/');
            if ((!slash || first_at < slash) &&
                secrets_add_forms(list, n, colon + 1, (size_t)(first_at - colon - 1)) != 0)
                return -1;
        }
        if (colon && last_at && colon < last_at &&
            secrets_add_forms(list, n, colon + 1, (size_t)(last_at - colon - 1)) != 0)
            return -1;
    }
    return 0;
}

/* qsort: longer secrets first, so the longest match is masked whole. */
static int longer_first(const void *a, const void *b)
{
    size_t la = strlen(*(char *const *)a), lb = strlen(*(char *const *)b);
    return la < lb ? 1 : la > lb ? -1 : 0;
}

/* Copy a libpq message into dst[dstlen] as one line, for logs: the
 * trailing newline goes, a "\n\t" continuation (a hint) becomes a space,
 * and a newline between the messages of several hosts becomes "; ". */
static void one_line(const char *src, char *dst, size_t dstlen)
{
    struct outbuf o = {dst, dstlen, 0};
    size_t n = strlen(src);
    while (n > 0 && (src[n - 1] == '\n' || src[n - 1] == '\r' || src[n - 1] == ' '))
        n--;
    for (size_t i = 0; i < n; i++) {
        if (src[i] == '\r')
            continue;
        if (src[i] == '\n') {
            if (src[i + 1] == '\t') {
                out_putc(&o, ' ');
                i++;
            } else {
                out_puts(&o, "; ");
            }
            continue;
        }
        out_putc(&o, src[i]);
    }
    if (dstlen > 0)
        dst[o.len] = '\0';
}

/* Copy src into dst[dstlen], truncating, always NUL-terminated; nothing
 * when dst is NULL or dstlen is 0. */
void pg_copy_str(char *dst, size_t dstlen, const char *src)
{
    if (!dst || dstlen == 0)
        return;
    size_t n = strlen(src);
    if (n >= dstlen)
        n = dstlen - 1;
    memcpy(dst, src, n);
    dst[n] = '\0';
}

/* Write a formatted, scrubbed, one-line message into err[errlen]. The
 * whole text is scrubbed before it is cut to size, so a cut cannot leave
 * part of a password unrecognised. */
static void set_err(char *const *secrets, char *err, size_t errlen, const char *fmt, ...)
{
    if (!err || errlen == 0)
        return;
    va_list ap;
    va_start(ap, fmt);
    int need = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    size_t size = need > 0 ? (size_t)need + 1 : 1;
    char *text = malloc(size);
    char *scrubbed = malloc(3 * size + sizeof MASK); /* a mask may outgrow its secret */
    if (!text || !scrubbed) {
        free(text);
        free(scrubbed);
        pg_copy_str(err, errlen, "out of memory (while formatting an error)");
        return;
    }
    va_start(ap, fmt);
    vsnprintf(text, size, fmt, ap);
    va_end(ap);
    scrub_into(secrets, text, scrubbed, 3 * size + sizeof MASK);
    one_line(scrubbed, err, errlen);
    free(text);
    free(scrubbed);
}


static void record_error(respool_pg_factory_t *f, const char *msg)
{
    pthread_mutex_lock(&f->lock);
    pg_copy_str(f->last_error, sizeof f->last_error, msg);
    f->last_error_len = strlen(f->last_error);
    pthread_mutex_unlock(&f->lock);
}

/* ------------------------------------------------------------------------ */
/* Connection helpers                                                        */
/* ------------------------------------------------------------------------ */

/* Set while precheck() absorbs input on this thread: notices go there. */
static _Thread_local bool *tl_fatal;

/* The notice receiver installed on every connection we make: while
 * precheck() runs on this thread it records a FATAL/PANIC that arrived while
 * idle (libpq reports an ERROR received while idle as a notice); otherwise
 * it does what libpq's default does (the message on stderr). A user may
 * replace it with PQsetNoticeReceiver; precheck then still sees EOF, and the
 * ping catches the rest. */
static void notice_receiver(void *arg, const PGresult *res)
{
    (void)arg;
    if (tl_fatal) {
        const char *sev = PQresultErrorField(res, PG_DIAG_SEVERITY_NONLOCALIZED);
        if (!sev)
            sev = PQresultErrorField(res, PG_DIAG_SEVERITY);
        if (sev && (strcmp(sev, "FATAL") == 0 || strcmp(sev, "PANIC") == 0))
            *tl_fatal = true;
        return;
    }
    fprintf(stderr, "%s", PQresultErrorMessage(res));
}

/* Zero-round-trip check: the connection is OK and nothing it has already
 * received says otherwise (a FATAL from pg_terminate_backend, EOF). */
static bool precheck(PGconn *c)
{
    if (PQstatus(c) != CONNECTION_OK)
        return false;
    int fd = PQsocket(c);
    if (fd < 0)
        return false;
    struct pollfd p = {.fd = fd, .events = POLLIN, .revents = 0};
    int rc;
    do
        rc = poll(&p, 1, 0);
    while (rc < 0 && errno == EINTR);
    if (rc < 0)
        return false;
    if (rc == 0)
        return true; /* nothing pending */
    /* Something arrived while idle: absorb it. libpq hands an ERROR/FATAL
     * received while idle to the notice receiver (ours: notice_receiver). */
    bool fatal = false;
    tl_fatal = &fatal;
    int ok = PQconsumeInput(c);
    /* Results nobody asked for would confuse the next command. */
    PGresult *r;
    while (ok && !PQisBusy(c) && (r = PQgetResult(c)) != NULL) {
        if (PQresultStatus(r) == PGRES_FATAL_ERROR)
            fatal = true;
        PQclear(r);
    }
    tl_fatal = NULL;
    return ok && !fatal && PQstatus(c) == CONNECTION_OK;
}

/* Send sql and wait for all its results until deadline. true iff every
 * result is COMMAND_OK, TUPLES_OK or EMPTY_QUERY and the connection is fine.
 * first_value (optional) receives the first value any result carries. */
bool pg_exec_bounded_value(PGconn *c, const char *sql, int64_t deadline, char *first_value,
                           size_t first_value_len)
{
    bool have_value = false;
    if (first_value && first_value_len > 0)
        first_value[0] = '\0';

    if (!PQsendQuery(c, sql))
        return false;
    /* in blocking mode PQsendQuery has flushed; in non-blocking mode flush */
    while (PQisnonblocking(c)) {
        int f = PQflush(c);
        if (f == 0)
            break;
        if (f < 0 || wait_fd(PQsocket(c), POLLOUT | POLLIN, deadline) != 1)
            return false;
        if (!PQconsumeInput(c))
            return false;
    }
    bool ok = true;
    for (;;) {
        while (PQisBusy(c)) {
            if (wait_fd(PQsocket(c), POLLIN, deadline) != 1)
                return false;
            if (!PQconsumeInput(c))
                return false;
        }
        PGresult *r = PQgetResult(c);
        if (!r)
            break;
        ExecStatusType s = PQresultStatus(r);
        if (s != PGRES_COMMAND_OK && s != PGRES_TUPLES_OK && s != PGRES_EMPTY_QUERY)
            ok = false;
        if (s == PGRES_TUPLES_OK && first_value && first_value_len > 0 && !have_value &&
            PQntuples(r) > 0 && PQnfields(r) > 0) {
            pg_copy_str(first_value, first_value_len, PQgetvalue(r, 0, 0));
            have_value = true;
        }
        PQclear(r);
        if (s == PGRES_COPY_IN || s == PGRES_COPY_OUT || s == PGRES_COPY_BOTH)
            return false; /* would never end by itself */
    }
    return ok && PQstatus(c) == CONNECTION_OK;
}

static bool exec_bounded(PGconn *c, const char *sql, int64_t deadline)
{
    return pg_exec_bounded_value(c, sql, deadline, NULL, 0);
}

/* ------------------------------------------------------------------------ */
/* Factory callbacks                                                         */
/* ------------------------------------------------------------------------ */

static int pg_create(void *ctx, void **resource, char *err, size_t errlen)
{
    respool_pg_factory_t *f = ctx;
    char msg[1024];
    int64_t deadline = pg_now_ms() + f->connect_timeout_ms;

    PGconn *c = PQconnectStartParams((const char *const *)f->keys,
                                     (const char *const *)f->vals, 0);
    if (!c) {
        set_err(f->secrets, msg, sizeof msg, "connect: out of memory");
        goto fail;
    }
    if (PQstatus(c) == CONNECTION_BAD) {
        set_err(f->secrets, msg, sizeof msg, "%s", PQerrorMessage(c));
        goto fail;
    }
    PostgresPollingStatusType st = PGRES_POLLING_WRITING;
    for (;;) {
        if (st == PGRES_POLLING_OK)
            break;
        if (st == PGRES_POLLING_FAILED) {
            set_err(f->secrets, msg, sizeof msg, "%s", PQerrorMessage(c));
            goto fail;
        }
        int fd = PQsocket(c);
        if (fd < 0) {
            set_err(f->secrets, msg, sizeof msg, "connect: no socket: %s", PQerrorMessage(c));
            goto fail;
        }
        int w = wait_fd(fd, st == PGRES_POLLING_READING ? POLLIN : POLLOUT, deadline);
        if (w == 0) {
            /* libpq's message so far: complete lines are earlier hosts'
             * failures; an unfinished last line is the host that hung. */
            const char *prior = PQerrorMessage(c);
            const char *end = prior ? strrchr(prior, '\n') : NULL;
            int prior_len = end ? (int)(end - prior) : 0;
            set_err(f->secrets, msg, sizeof msg,
                    "connection to server at \"%s\", port %s timed out after %ld ms%s%.*s",
                    PQhost(c) ? PQhost(c) : "?", PQport(c) ? PQport(c) : "?",
                    f->connect_timeout_ms, prior_len > 0 ? "; earlier: " : "", prior_len,
                    prior ? prior : "");
            goto fail;
        }
        if (w < 0) {
            set_err(f->secrets, msg, sizeof msg, "connect: poll: %s", strerror(errno));
            goto fail;
        }
        st = PQconnectPoll(c);
    }
    pg_connection_t *pc = malloc(sizeof *pc);
    if (!pc) {
        set_err(f->secrets, msg, sizeof msg, "connect: out of memory");
        goto fail;
    }
    PQsetNoticeReceiver(c, notice_receiver, NULL);
    pc->conn = c;
    pc->known_good_ms = pg_now_ms();
    *resource = pc;
    return 0;

fail:
    if (c)
        PQfinish(c);
    record_error(f, msg);
    if (err && errlen > 0)
        pg_copy_str(err, errlen, msg);
    return -1;
}

static void pg_destroy(void *ctx, void *resource)
{
    (void)ctx;
    pg_connection_t *pc = resource;
    /* PQfinish flushes what is still unsent (COPY data, a pipeline) in
     * blocking mode before its Terminate: with a backend that is not reading
     * that would block the manager without bound. Such a connection is
     * abandoned anyway: cut it first. */
    if (PQtransactionStatus(pc->conn) == PQTRANS_ACTIVE ||
        PQpipelineStatus(pc->conn) != PQ_PIPELINE_OFF) {
        int fd = PQsocket(pc->conn);
        if (fd >= 0)
            shutdown(fd, SHUT_RDWR);
    }
    PQfinish(pc->conn);
    free(pc);
}

/* Called on every checkout from the idle list (the adapter's pools use the
 * core's validate_idle_ms = 0) and by keepalive: the zero-round-trip check
 * always, the ping only for a connection not known good for
 * validate_idle_ms. */
static bool pg_validate(void *ctx, void *resource)
{
    respool_pg_factory_t *f = ctx;
    pg_connection_t *pc = resource;
    PGconn *c = pc->conn;
    if (PQtransactionStatus(c) != PQTRANS_IDLE || !precheck(c))
        return false;
    int64_t now = pg_now_ms();
    if (f->validate_idle_ms > 0 && now - pc->known_good_ms < f->validate_idle_ms)
        return true;
    if (!exec_bounded(c, "", now + f->ping_timeout_ms))
        return false;
    pc->known_good_ms = pg_now_ms();
    return true;
}

static bool pg_reset(void *ctx, void *resource)
{
    respool_pg_factory_t *f = ctx;
    pg_connection_t *pc = resource;
    PGconn *c = pc->conn;

    if (PQstatus(c) != CONNECTION_OK)
        return false;
    if (PQpipelineStatus(c) != PQ_PIPELINE_OFF)
        return false;
    if (PQisnonblocking(c) && PQsetnonblocking(c, 0) != 0)
        return false;
    bool rollback;
    switch (PQtransactionStatus(c)) {
    case PQTRANS_IDLE:
        rollback = false;
        break;
    case PQTRANS_INTRANS:
    case PQTRANS_INERROR:
        rollback = true;
        break;
    case PQTRANS_ACTIVE: /* a command or COPY in progress */
    case PQTRANS_UNKNOWN:
    default:
        return false;
    }
    /* Not ACTIVE means no command in progress; drain anything that is
     * already complete anyway, and absorb a pending FATAL/EOF. */
    if (!precheck(c))
        return false;
    if (rollback && !exec_bounded(c, "ROLLBACK", pg_now_ms() + f->reset_timeout_ms))
        return false;
    if (PQtransactionStatus(c) != PQTRANS_IDLE)
        return false;
    if (f->reset_query && !exec_bounded(c, f->reset_query, pg_now_ms() + f->reset_timeout_ms))
        return false;
    if (PQtransactionStatus(c) != PQTRANS_IDLE)
        return false;
    /* Notifications (LISTEN) already received were for this borrower. */
    PGnotify *n;
    while ((n = PQnotifies(c)) != NULL)
        PQfreemem(n);
    pc->known_good_ms = pg_now_ms();
    return true;
}

/* ------------------------------------------------------------------------ */
/* Factory                                                                   */
/* ------------------------------------------------------------------------ */

int pg_check_duration(long v, long dflt, long *out)
{
    if (v < 0 || v > MAX_DURATION_MS)
        return -1;
    *out = v ? v : dflt;
    return 0;
}

/* With options.connect_timeout_ms unset, libpq's own connect_timeout key
 * (seconds; as in libpq, 1 counts as 2, and 0 or less means the default
 * here, never an endless wait) sets the deadline of one connect attempt. */
static void conninfo_connect_timeout(respool_pg_factory_t *f)
{
    for (size_t i = 0; f->keys[i]; i++) {
        if (strcmp(f->keys[i], "connect_timeout") != 0)
            continue;
        char *end;
        errno = 0;
        long seconds = strtol(f->vals[i], &end, 10);
        if (errno == 0 && end != f->vals[i] && seconds > 0 && seconds <= MAX_DURATION_MS / 1000)
            f->connect_timeout_ms = (seconds < 2 ? 2 : seconds) * 1000;
    }
}

RESPOOL_API void respool_pg_factory_free(respool_pg_factory_t *f)
{
    if (!f)
        return;
    strv_free(f->keys);
    strv_free(f->vals);
    strv_free(f->secrets);
    free(f->reset_query);
    pthread_mutex_destroy(&f->lock);
    free(f);
}

RESPOOL_API int respool_pg_factory_init(respool_pg_factory_t **out, const char *conninfo,
                                        const respool_pg_options_t *opt, char *err,
                                        size_t errlen)
{
    respool_pg_options_t defaults = {0};
    char **raw = NULL;
    size_t nraw = 0;
    PQconninfoOption *parsed = NULL;
    respool_pg_factory_t *f = NULL;
    int rc = RESPOOL_ENOMEM;

    if (err && errlen > 0)
        err[0] = '\0';
    if (!out || !conninfo) {
        if (out)
            *out = NULL;
        set_err(NULL, err, errlen, "NULL argument");
        return RESPOOL_EINVAL;
    }
    *out = NULL;
    if (!opt)
        opt = &defaults;

    /* Passwords as written, for scrubbing even a malformed conninfo's echo. */
    if (raw_secrets(conninfo, &raw, &nraw) != 0)
        goto out;
    if (raw)
        qsort(raw, nraw, sizeof *raw, longer_first);

    f = calloc(1, sizeof *f);
    if (!f)
        goto out;
    if (pthread_mutex_init(&f->lock, NULL) != 0) {
        free(f);
        f = NULL;
        goto out;
    }
    if (pg_check_duration(opt->connect_timeout_ms, DEFAULT_CONNECT_TIMEOUT_MS,
                       &f->connect_timeout_ms) != 0 ||
        pg_check_duration(opt->ping_timeout_ms, DEFAULT_PING_TIMEOUT_MS, &f->ping_timeout_ms) != 0 ||
        pg_check_duration(opt->reset_timeout_ms, DEFAULT_RESET_TIMEOUT_MS,
                       &f->reset_timeout_ms) != 0) {
        set_err(raw, err, errlen, "invalid respool_pg_options_t duration");
        rc = RESPOOL_EINVAL;
        goto out;
    }
    if (opt->validate_idle_ms == RESPOOL_PG_VALIDATE_ALWAYS)
        f->validate_idle_ms = 0;
    else if (pg_check_duration(opt->validate_idle_ms, DEFAULT_VALIDATE_IDLE_MS,
                            &f->validate_idle_ms) != 0) {
        set_err(raw, err, errlen, "invalid respool_pg_options_t.validate_idle_ms");
        rc = RESPOOL_EINVAL;
        goto out;
    }
    if (opt->reset_query && opt->reset_query[0]) {
        f->reset_query = strdup(opt->reset_query);
        if (!f->reset_query)
            goto out;
    }

    char *perr = NULL;
    parsed = PQconninfoParse(conninfo, &perr);
    if (!parsed) {
        if (perr) {
            set_err(raw, err, errlen, "invalid conninfo: %s", perr);
            PQfreemem(perr);
            rc = RESPOOL_EINVAL;
        } else {
            set_err(raw, err, errlen, "invalid conninfo: out of memory");
        }
        goto out;
    }

    size_t n = 0;
    for (PQconninfoOption *o = parsed; o->keyword; o++)
        if (o->val)
            n++;
    f->keys = calloc(n + 1, sizeof *f->keys);
    f->vals = calloc(n + 1, sizeof *f->vals);
    if (!f->keys || !f->vals)
        goto out;
    size_t i = 0;
    for (PQconninfoOption *o = parsed; o->keyword; o++) {
        if (!o->val)
            continue;
        f->keys[i] = strdup(o->keyword);
        f->vals[i] = strdup(o->val);
        if (!f->keys[i] || !f->vals[i]) {
            free(f->keys[i]);
            free(f->vals[i]);
            f->keys[i] = f->vals[i] = NULL;
            goto out;
        }
        i++;
        if ((strcmp(o->keyword, "password") == 0 || strcmp(o->keyword, "sslpassword") == 0) &&
            secrets_add(&raw, &nraw, o->val, strlen(o->val)) != 0)
            goto out;
    }
    if (opt->connect_timeout_ms == 0)
        conninfo_connect_timeout(f);
    if (raw)
        qsort(raw, nraw, sizeof *raw, longer_first);
    f->secrets = raw;
    raw = NULL;
    if (!f->secrets) { /* always an array, possibly empty */
        f->secrets = calloc(1, sizeof *f->secrets);
        if (!f->secrets)
            goto out;
    }
    *out = f;
    f = NULL;
    rc = RESPOOL_OK;

out:
    if (rc == RESPOOL_ENOMEM)
        set_err(NULL, err, errlen, "out of memory");
    if (parsed)
        PQconninfoFree(parsed);
    strv_free(raw);
    respool_pg_factory_free(f);
    return rc;
}

RESPOOL_API respool_factory_t respool_pg_factory(respool_pg_factory_t *f)
{
    respool_factory_t fac = {
        .create = pg_create,
        .destroy = pg_destroy,
        .validate = pg_validate,
        .reset = pg_reset,
        .ctx = f,
    };
    return fac;
}

/* The fork hook (config.abandon): a connection inherited by a child
 * process. Its socket is the parent's too, so nothing may be sent on it —
 * PQfinish would send Terminate and end the parent's session. The child's
 * descriptor is pointed at /dev/null first (dup2 keeps the number, so no
 * other descriptor can take it meanwhile); PQfinish then says goodbye to
 * /dev/null and frees libpq's memory. */
static void pg_abandon(void *ctx, void *resource)
{
    (void)ctx;
    pg_connection_t *pc = resource;
    int fd = PQsocket(pc->conn);
    if (fd >= 0) {
        int null_fd = open("/dev/null", O_RDWR | O_CLOEXEC);
        if (null_fd < 0 || dup2(null_fd, fd) < 0) {
            /* Cannot neutralise it: leak the connection rather than
             * touch the parent's session. */
            if (null_fd >= 0)
                close(null_fd);
            return;
        }
        close(null_fd);
    }
    PQfinish(pc->conn);
    free(pc);
}

RESPOOL_API void respool_pg_config_apply(const respool_pg_factory_t *f, respool_config_t *cfg)
{
    /* validate on every checkout from the idle list: pg_validate does the
     * zero-round-trip check each time and decides about the ping itself;
     * inherited connections are abandoned in a fork() child. */
    if (f && cfg) {
        cfg->validate_idle_ms = 0;
        cfg->abandon = pg_abandon;
    }
}

/* For the cluster pool (pg_internal.h). */
long pg_factory_connect_timeout_ms(const respool_pg_factory_t *f) { return f->connect_timeout_ms; }
long pg_factory_ping_timeout_ms(const respool_pg_factory_t *f) { return f->ping_timeout_ms; }
long pg_factory_validate_idle_ms(const respool_pg_factory_t *f) { return f->validate_idle_ms; }

void pg_factory_error(const respool_pg_factory_t *f, char *err, size_t errlen, const char *fmt,
                      ...)
{
    char text[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(text, sizeof text, fmt, ap);
    va_end(ap);
    set_err(f ? f->secrets : NULL, err, errlen, "%s", text);
}

RESPOOL_API size_t respool_pg_last_error(respool_pg_factory_t *f, char *buf, size_t buflen)
{
    if (!f) {
        if (buf && buflen > 0)
            buf[0] = '\0';
        return 0;
    }
    pthread_mutex_lock(&f->lock);
    size_t n = f->last_error_len;
    if (buf && buflen > 0)
        pg_copy_str(buf, buflen, f->last_error);
    pthread_mutex_unlock(&f->lock);
    return n;
}

/* ------------------------------------------------------------------------ */
/* Pools that own their factory                                              */
/* ------------------------------------------------------------------------ */

struct owned {
    respool_t *pool;
    respool_pg_factory_t *factory;
    struct owned *next;
};

static pthread_mutex_t owned_lock = PTHREAD_MUTEX_INITIALIZER;
static struct owned *owned_list;

RESPOOL_API int respool_pg_pool_create(respool_t **out, const char *conninfo,
                                       const respool_config_t *cfg,
                                       const respool_pg_options_t *opt, char *err,
                                       size_t errlen)
{
    respool_pg_factory_t *f = NULL;
    if (!out) {
        set_err(NULL, err, errlen, "NULL argument");
        return RESPOOL_EINVAL;
    }
    *out = NULL;
    int rc = respool_pg_factory_init(&f, conninfo, opt, err, errlen);
    if (rc != RESPOOL_OK)
        return rc;

    struct owned *node = malloc(sizeof *node);
    if (!node) {
        respool_pg_factory_free(f);
        set_err(NULL, err, errlen, "out of memory");
        return RESPOOL_ENOMEM;
    }
    respool_config_t c;
    if (cfg) {
        c = *cfg;
    } else {
        memset(&c, 0, sizeof c);
        c.size = 1;
    }
    respool_pg_config_apply(f, &c);
    /* keepalive calls validate, which pings only connections not known good
     * for validate_idle_ms: below that, keepalive would never ping. */
    if (c.keepalive_ms > 0 && f->validate_idle_ms > c.keepalive_ms) {
        set_err(NULL, err, errlen,
                "keepalive_ms (%ld) is below the adapter's validate_idle_ms (%ld), so "
                "keepalive would never ping: lower options.validate_idle_ms to at most "
                "keepalive_ms",
                c.keepalive_ms, f->validate_idle_ms);
        free(node);
        respool_pg_factory_free(f);
        return RESPOOL_EINVAL;
    }
    respool_factory_t fac = respool_pg_factory(f);
    respool_t *pool = NULL;
    rc = respool_create(&pool, &c, &fac);
    if (rc != RESPOOL_OK) {
        if (rc == RESPOOL_EFACTORY) {
            char last[sizeof f->last_error];
            respool_pg_last_error(f, last, sizeof last);
            set_err(f->secrets, err, errlen, "could not fill the pool: %s", last);
        } else {
            set_err(NULL, err, errlen, "respool_create: %s", respool_strerror(rc));
        }
        free(node);
        respool_pg_factory_free(f);
        return rc;
    }
    node->pool = pool;
    node->factory = f;
    pthread_mutex_lock(&owned_lock);
    node->next = owned_list;
    owned_list = node;
    pthread_mutex_unlock(&owned_lock);
    *out = pool;
    return RESPOOL_OK;
}

RESPOOL_API void respool_pg_pool_free(respool_t *pool)
{
    if (!pool)
        return;
    struct owned *found = NULL;
    pthread_mutex_lock(&owned_lock);
    for (struct owned **p = &owned_list; *p; p = &(*p)->next) {
        if ((*p)->pool == pool) {
            found = *p;
            *p = found->next;
            break;
        }
    }
    pthread_mutex_unlock(&owned_lock);
    respool_free(pool);
    if (found) {
        respool_pg_factory_free(found->factory);
        free(found);
    }
}

/* ------------------------------------------------------------------------ */
/* Using connections                                                         */
/* ------------------------------------------------------------------------ */

RESPOOL_API respool_pg_factory_t *respool_pg_pool_factory(respool_t *pool)
{
    respool_pg_factory_t *factory = NULL;
    pthread_mutex_lock(&owned_lock);
    for (struct owned *o = owned_list; o && pool; o = o->next) {
        if (o->pool == pool) {
            factory = o->factory;
            break;
        }
    }
    pthread_mutex_unlock(&owned_lock);
    return factory;
}

RESPOOL_API PGconn *respool_pg_conn(const respool_lease_t *lease)
{
    if (!lease || !lease->resource)
        return NULL;
    return ((const pg_connection_t *)lease->resource)->conn;
}

RESPOOL_API int respool_pg_run_at(respool_t *pool, long timeout_ms, respool_pg_fn fn, void *arg,
                                  const char *site, const char *function)
{
    if (!pool || !fn)
        return RESPOOL_EINVAL;
    respool_lease_t lease;
    int rc = respool_checkout_at(pool, timeout_ms, &lease, site, function);
    if (rc != RESPOOL_OK)
        return rc;
    PGconn *c = respool_pg_conn(&lease);
    bool ok = fn(c, arg);
    if (PQstatus(c) == CONNECTION_BAD)
        respool_destroyed(pool, &lease);
    else
        respool_checkin(pool, &lease);
    return ok ? RESPOOL_OK : RESPOOL_PG_EWORK;
}

RESPOOL_API int(respool_pg_run)(respool_t *pool, long timeout_ms, respool_pg_fn fn, void *arg)
{
    return respool_pg_run_at(pool, timeout_ms, fn, arg, NULL, NULL);
}
