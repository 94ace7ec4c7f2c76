/*
 * respool_pg_cluster.c — one pool over several PostgreSQL hosts (a primary
 * and its streaming replicas): a core pool per host, round-robin routing by
 * role, failover, live host-list updates. See include/respool_pg.h for the
 * contract and docs/postgres.md ("Running over a cluster") for the design.
 *
 * Who owns what:
 *   cluster->lock  guards the host list, every host's state, role and
 *                  active member, the member list and the writer. Never
 *                  held while a core call that can block runs, nor while a
 *                  factory callback runs; taken inside factory callbacks
 *                  (which run with no pool lock held), so the order is
 *                  always "no pool lock, then cluster->lock".
 *   a member       one core pool of a host. A host has one active member.
 *                  A member is retired when its host is marked down (a fresh
 *                  member replaces it) or removed: it is shut down with
 *                  timeout 0, so its waiting checkouts fail over to other
 *                  hosts at once, its idle connections are destroyed and
 *                  leases coming back are destroyed; checkin still finds it.
 *                  The monitor frees it once it is drained and unused.
 *   member->users  calls in progress on the member's pool; taken under the
 *                  lock (so a member is never freed under a caller),
 *                  dropped anywhere.
 *   the monitor    one thread: swaps fresh pools in for hosts marked down,
 *                  asks hosts their role (often while no primary is known),
 *                  frees drained members and removed hosts.
 */
#include "pg_internal.h"
#include "respool_pg.h"

#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define DEFAULT_ROLE_CHECK_MS 5000L
#define DEFAULT_FAILOVER_POLL_MS 100L
#define REAP_INTERVAL_MS 50L    /* monitor period while retired members wait */
#define MAX_HOSTS 64             /* hosts in one list */

typedef struct host host_t;
typedef struct member member_t;

struct member {
    respool_t *pool;
    host_t *host;
    member_t *next;      /* cluster->members (every live member)   [lock] */
    atomic_uint users;   /* calls in progress on pool; +1 under the lock */
    bool retired;        /* shut down; freed once drained          [lock] */
};

struct host {
    respool_pg_cluster_t *cluster;
    char *conninfo;      /* this host's own conninfo, its identity. Holds
                            the password: never printed. */
    char name[128];      /* "host:port" for messages and stats */
    respool_pg_factory_t *factory;
    respool_factory_t adapter; /* the adapter's callbacks on factory */
    /* Under cluster->lock: */
    member_t *active;    /* NULL once removed */
    respool_pg_role_t role;
    respool_pg_host_state_t state;
    bool removed;        /* no longer listed; freed with its last member */
    bool swap_wanted;    /* marked down: the monitor swaps a fresh pool in */
    unsigned members;    /* live members pointing here (active + retired) */
    unsigned waiting;    /* cluster checkouts blocked in its pool */
    unsigned times_down;
    int64_t role_checked_ms;
    char last_error[256];
    host_t *next_removed;
    /* Lock-free readers: */
    atomic_int role_seen;           /* copy of role, for the checkin hint */
    atomic_uint_least64_t checkouts;
};

struct respool_pg_cluster {
    pthread_mutex_t lock;
    pthread_cond_t changed;      /* a host's state or role, or the writer */
    pthread_cond_t monitor_wake;
    pthread_mutex_t update_lock; /* one host-list update at a time */
    respool_config_t host_cfg;   /* each host's pool (adapter settings applied) */
    respool_pg_options_t opt;    /* reset_query points at reset_query below */
    char *reset_query;
    long role_check_ms, failover_poll_ms;
    unsigned fork_generation;    /* fork_generation when made: a child sees it differ */
    /* Under lock: */
    host_t **hosts;              /* the current list, in the caller's order */
    size_t host_count;
    host_t *removed;             /* unlisted hosts with live members */
    member_t *members;
    host_t *writer;              /* where RESPOOL_PG_PRIMARY goes; NULL = none */
    unsigned cursor;             /* round-robin position */
    bool shutting_down;          /* checkouts refused */
    bool stopping;               /* the monitor returns */
    bool monitor_poke;           /* a checkout waits for a role: look now */
    bool monitor_started;
    pthread_t monitor;
};

/* ------------------------------------------------------------------------ */
/* Small helpers                                                             */
/* ------------------------------------------------------------------------ */

static atomic_uint fork_generation;
static pthread_once_t fork_once = PTHREAD_ONCE_INIT;
static void on_fork_child(void) { atomic_fetch_add(&fork_generation, 1); }
static void register_fork_handler(void) { pthread_atfork(NULL, NULL, on_fork_child); }

/* In a fork() child: the monitor does not exist and the lock may have been
 * held by a thread that is gone; the cluster only frees itself there. */
static bool in_fork_child(const respool_pg_cluster_t *c)
{
    return atomic_load_explicit(&fork_generation, memory_order_relaxed) != c->fork_generation;
}

static void format_error(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void format_error(char *err, size_t errlen, const char *fmt, ...)
{
    if (!err || errlen == 0)
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
}

/* Absolute CLOCK_MONOTONIC time ms from now, for pthread_cond_timedwait. */
static struct timespec abstime_in(int64_t ms)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    ts.tv_sec += (time_t)(ms / 1000);
    ts.tv_nsec += (long)(ms % 1000) * 1000000L;
    if (ts.tv_nsec >= 1000000000L) {
        ts.tv_sec++;
        ts.tv_nsec -= 1000000000L;
    }
    return ts;
}

static struct timespec abstime_at(int64_t deadline_ms)
{
    int64_t left = deadline_ms - pg_now_ms();
    return abstime_in(left > 0 ? left : 0);
}

/* The thread's last cluster checkout failure (respool_pg_cluster_error). */
static _Thread_local char cluster_error_text[1024];

static void cluster_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void cluster_error(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(cluster_error_text, sizeof cluster_error_text, fmt, ap);
    va_end(ap);
}

RESPOOL_API size_t respool_pg_cluster_error(char *buf, size_t buflen)
{
    pg_copy_str(buf, buflen, cluster_error_text);
    return strlen(cluster_error_text);
}

RESPOOL_API const char *respool_pg_role_name(respool_pg_role_t role)
{
    switch (role) {
    case RESPOOL_PG_ROLE_UNKNOWN: return "unknown";
    case RESPOOL_PG_ROLE_PRIMARY: return "primary";
    case RESPOOL_PG_ROLE_REPLICA: return "replica";
    }
    return "unknown";
}

RESPOOL_API const char *respool_pg_host_state_name(respool_pg_host_state_t state)
{
    switch (state) {
    case RESPOOL_PG_HOST_CONNECTING: return "connecting";
    case RESPOOL_PG_HOST_UP: return "up";
    case RESPOOL_PG_HOST_DOWN: return "down";
    case RESPOOL_PG_HOST_FENCED: return "fenced";
    }
    return "unknown";
}

/* ------------------------------------------------------------------------ */
/* Splitting a multi-host conninfo into one conninfo per host                */
/* ------------------------------------------------------------------------ */

typedef struct host_spec {
    char *conninfo;
    char name[128];
} host_spec_t;

typedef struct spec_list {
    host_spec_t *items;
    size_t count;
} spec_list_t;

static void specs_free(spec_list_t *l)
{
    for (size_t i = 0; i < l->count; i++)
        free(l->items[i].conninfo);
    free(l->items);
    l->items = NULL;
    l->count = 0;
}

/* Split "a,b,c" into at most MAX_HOSTS pieces (empty pieces kept, as libpq
 * keeps them). Returns the count; 0 for NULL or "". */
static size_t split_commas(const char *s, char **pieces, size_t max, bool *too_many)
{
    size_t n = 0;
    *too_many = false;
    if (!s || !*s)
        return 0;
    for (const char *p = s;;) {
        const char *comma = strchr(p, ',');
        size_t len = comma ? (size_t)(comma - p) : strlen(p);
        if (n == max) {
            *too_many = true;
            return n;
        }
        pieces[n] = strndup(p, len);
        if (!pieces[n])
            return n; /* the caller checks for NULL pieces */
        n++;
        if (!comma)
            return n;
        p = comma + 1;
    }
}

/* Append " key='value'" (libpq quoting) to a growing string. */
static int append_pair(char **buf, size_t *len, size_t *cap, const char *key, const char *value)
{
    size_t need = *len + strlen(key) + 2 * strlen(value) + 6;
    if (need > *cap) {
        size_t ncap = need * 2;
        char *nb = realloc(*buf, ncap);
        if (!nb)
            return -1;
        *buf = nb;
        *cap = ncap;
    }
    char *o = *buf + *len;
    if (*len > 0)
        *o++ = ' ';
    for (const char *k = key; *k; k++)
        *o++ = *k;
    *o++ = '=';
    *o++ = '\'';
    for (const char *v = value; *v; v++) {
        if (*v == '\'' || *v == '\\')
            *o++ = '\\';
        *o++ = *v;
    }
    *o++ = '\'';
    *o = '\0';
    *len = (size_t)(o - *buf);
    return 0;
}

/* Parse one conninfo (validated first by the adapter, which scrubs its
 * error text) and append one spec per host to out. */
static int specs_add(spec_list_t *out, const char *conninfo, const respool_pg_options_t *opt,
                     char *err, size_t errlen)
{
    respool_pg_factory_t *check = NULL;
    int rc = respool_pg_factory_init(&check, conninfo, opt, err, errlen);
    if (rc != RESPOOL_OK)
        return rc;
    respool_pg_factory_free(check);

    char *perr = NULL;
    PQconninfoOption *opts = PQconninfoParse(conninfo, &perr);
    if (!opts) { /* parsed a moment ago: only memory can fail now */
        PQfreemem(perr);
        format_error(err, errlen, "out of memory");
        return RESPOOL_ENOMEM;
    }
    const char *hosts = NULL, *addrs = NULL, *ports = NULL, *attrs = NULL;
    for (PQconninfoOption *o = opts; o->keyword; o++) {
        if (!o->val)
            continue;
        if (strcmp(o->keyword, "host") == 0)
            hosts = o->val;
        else if (strcmp(o->keyword, "hostaddr") == 0)
            addrs = o->val;
        else if (strcmp(o->keyword, "port") == 0)
            ports = o->val;
        else if (strcmp(o->keyword, "target_session_attrs") == 0)
            attrs = o->val;
    }

    char *host_v[MAX_HOSTS + 1] = {0}, *addr_v[MAX_HOSTS + 1] = {0}, *port_v[MAX_HOSTS + 1] = {0};
    bool over_h, over_a, over_p;
    size_t nh = split_commas(hosts, host_v, MAX_HOSTS, &over_h);
    size_t na = split_commas(addrs, addr_v, MAX_HOSTS, &over_a);
    size_t np = split_commas(ports, port_v, MAX_HOSTS, &over_p);
    size_t n = nh > na ? nh : na;
    if (n == 0)
        n = 1; /* no host at all: libpq's default host, one of it */
    char *buf = NULL;
    size_t len = 0, cap = 0;
    rc = RESPOOL_ENOMEM;

    for (size_t i = 0; i < nh; i++)
        if (!host_v[i])
            goto out;
    for (size_t i = 0; i < na; i++)
        if (!addr_v[i])
            goto out;
    for (size_t i = 0; i < np; i++)
        if (!port_v[i])
            goto out;
    rc = RESPOOL_EINVAL;
    if (over_h || over_a || over_p || out->count + n > MAX_HOSTS) {
        format_error(err, errlen, "more than %d hosts", MAX_HOSTS);
        goto out;
    }
    if (nh > 0 && na > 0 && nh != na) {
        format_error(err, errlen, "could not match %zu host names to %zu hostaddr values", nh,
                     na);
        goto out;
    }
    if (np > 1 && np != n) {
        format_error(err, errlen, "could not match %zu port numbers to %zu hosts", np, n);
        goto out;
    }
    if (attrs && strcmp(attrs, "any") != 0) {
        format_error(err, errlen,
                     "target_session_attrs=%s: a cluster pool routes by role itself; ask "
                     "for RESPOOL_PG_PRIMARY or RESPOOL_PG_REPLICA per checkout",
                     attrs);
        goto out;
    }

    host_spec_t *grown = realloc(out->items, (out->count + n) * sizeof *grown);
    rc = RESPOOL_ENOMEM;
    if (!grown)
        goto out;
    out->items = grown;
    for (size_t i = 0; i < n; i++) {
        len = 0;
        if (buf)
            buf[0] = '\0';
        for (PQconninfoOption *o = opts; o->keyword; o++) {
            if (!o->val || strcmp(o->keyword, "host") == 0 ||
                strcmp(o->keyword, "hostaddr") == 0 || strcmp(o->keyword, "port") == 0 ||
                strcmp(o->keyword, "target_session_attrs") == 0)
                continue;
            if (append_pair(&buf, &len, &cap, o->keyword, o->val) != 0)
                goto out;
        }
        const char *h = i < nh ? host_v[i] : "";
        const char *a = i < na ? addr_v[i] : "";
        const char *p = np == 0 ? "" : np == 1 ? port_v[0] : port_v[i];
        if ((*h && append_pair(&buf, &len, &cap, "host", h) != 0) ||
            (*a && append_pair(&buf, &len, &cap, "hostaddr", a) != 0) ||
            (*p && append_pair(&buf, &len, &cap, "port", p) != 0))
            goto out;
        host_spec_t *spec = &out->items[out->count];
        spec->conninfo = strdup(buf ? buf : "");
        if (!spec->conninfo)
            goto out;
        snprintf(spec->name, sizeof spec->name, "%s:%s", *h ? h : *a ? a : "(default)",
                 *p ? p : "5432");
        out->count++;
    }
    rc = RESPOOL_OK;
out:
    if (rc == RESPOOL_ENOMEM)
        format_error(err, errlen, "out of memory");
    for (size_t i = 0; i <= MAX_HOSTS; i++) {
        free(host_v[i]);
        free(addr_v[i]);
        free(port_v[i]);
    }
    free(buf);
    PQconninfoFree(opts);
    return rc;
}

/* Every conninfo of the list, split; a host listed twice is an error. */
static int specs_from_list(spec_list_t *out, const char *const *conninfos, size_t count,
                           const respool_pg_options_t *opt, char *err, size_t errlen)
{
    out->items = NULL;
    out->count = 0;
    if (!conninfos || count == 0) {
        format_error(err, errlen, "no conninfo given");
        return RESPOOL_EINVAL;
    }
    for (size_t i = 0; i < count; i++) {
        if (!conninfos[i]) {
            format_error(err, errlen, "conninfo %zu is NULL", i);
            specs_free(out);
            return RESPOOL_EINVAL;
        }
        int rc = specs_add(out, conninfos[i], opt, err, errlen);
        if (rc != RESPOOL_OK) {
            specs_free(out);
            return rc;
        }
    }
    for (size_t i = 0; i < out->count; i++)
        for (size_t j = i + 1; j < out->count; j++)
            if (strcmp(out->items[i].conninfo, out->items[j].conninfo) == 0) {
                format_error(err, errlen, "host %s is listed twice", out->items[i].name);
                specs_free(out);
                return RESPOOL_EINVAL;
            }
    return RESPOOL_OK;
}

/* ------------------------------------------------------------------------ */
/* Roles and the writer                                                      */
/* ------------------------------------------------------------------------ */

/* The role of the server behind conn: its in_hot_standby report (PostgreSQL
 * 14 and later send it at connect and after every change, at the end of the
 * next command) or, when absent or when asked to be sure, a query. */
static respool_pg_role_t connection_role(host_t *h, PGconn *conn, bool ask)
{
    const char *standby = ask ? NULL : PQparameterStatus(conn, "in_hot_standby");
    if (standby)
        return strcmp(standby, "on") == 0 ? RESPOOL_PG_ROLE_REPLICA : RESPOOL_PG_ROLE_PRIMARY;
    char value[8];
    int64_t deadline = pg_now_ms() + pg_factory_ping_timeout_ms(h->factory);
    if (!pg_exec_bounded_value(conn, "SELECT pg_is_in_recovery()", deadline, value,
                               sizeof value) ||
        !value[0])
        return RESPOOL_PG_ROLE_UNKNOWN;
    return value[0] == 't' ? RESPOOL_PG_ROLE_REPLICA : RESPOOL_PG_ROLE_PRIMARY;
}

/* Choose where RESPOOL_PG_PRIMARY goes (lock held). The writer is sticky:
 * it stays while it is up and primary. Otherwise the first listed host
 * that is up (not fenced) and primary becomes it. Any other host that says
 * it is a primary (the old primary back on its own after a failover) is
 * fenced: nothing is routed to it, so writes never split. Fencing is
 * sticky too: a fenced host is never elected; it leaves the fence only by
 * becoming a replica, or by going down and reconnecting while no writer is
 * up, or by being removed from the list. */
static void elect_writer(respool_pg_cluster_t *c)
{
    host_t *w = c->writer;
    if (w && (w->removed || w->role != RESPOOL_PG_ROLE_PRIMARY || w->state != RESPOOL_PG_HOST_UP))
        w = NULL;
    for (size_t i = 0; !w && i < c->host_count; i++) {
        host_t *h = c->hosts[i];
        if (h->role == RESPOOL_PG_ROLE_PRIMARY && h->state == RESPOOL_PG_HOST_UP)
            w = h;
    }
    c->writer = w;
    for (size_t i = 0; i < c->host_count; i++) {
        host_t *h = c->hosts[i];
        if (h->state == RESPOOL_PG_HOST_UP && h->role == RESPOOL_PG_ROLE_PRIMARY && h != w)
            h->state = RESPOOL_PG_HOST_FENCED;
        else if (h->state == RESPOOL_PG_HOST_FENCED && h->role != RESPOOL_PG_ROLE_PRIMARY)
            h->state = RESPOOL_PG_HOST_UP;
    }
}

/* A host's role as just learned (lock held). */
static void note_role(respool_pg_cluster_t *c, host_t *h, respool_pg_role_t role)
{
    h->role_checked_ms = pg_now_ms();
    if (role == RESPOOL_PG_ROLE_UNKNOWN || h->role == role)
        return;
    h->role = role;
    atomic_store(&h->role_seen, (int)role);
    elect_writer(c);
    pthread_cond_broadcast(&c->changed);
}

/* After a command on a connection of m: if the server now reports another
 * role than the one we know (a replica promoted), record it. Cheap: one
 * parameter lookup and an atomic load unless the role changed. */
static void observe_role(member_t *m, PGconn *conn)
{
    const char *standby = PQparameterStatus(conn, "in_hot_standby");
    if (!standby)
        return;
    respool_pg_role_t role =
        strcmp(standby, "on") == 0 ? RESPOOL_PG_ROLE_REPLICA : RESPOOL_PG_ROLE_PRIMARY;
    host_t *h = m->host;
    if (atomic_load_explicit(&h->role_seen, memory_order_relaxed) == (int)role)
        return;
    respool_pg_cluster_t *c = h->cluster;
    pthread_mutex_lock(&c->lock);
    if (h->active == m)
        note_role(c, h, role);
    pthread_mutex_unlock(&c->lock);
}

/* ------------------------------------------------------------------------ */
/* Factory callbacks of a host's pool: the adapter's, plus what the cluster  */
/* learns from them. ctx is the member.                                      */
/* ------------------------------------------------------------------------ */

static int member_create(void *ctx, void **resource, char *err, size_t errlen)
{
    member_t *m = ctx;
    host_t *h = m->host;
    respool_pg_cluster_t *c = h->cluster;
    char text[256];
    int rc = h->adapter.create(h->adapter.ctx, resource, text, sizeof text);
    respool_pg_role_t role = RESPOOL_PG_ROLE_UNKNOWN;
    if (rc == 0) {
        role = connection_role(h, ((pg_connection_t *)*resource)->conn, false);
        if (role == RESPOOL_PG_ROLE_UNKNOWN) {
            pg_factory_error(h->factory, text, sizeof text,
                             "connected to %s but could not learn its role: %s", h->name,
                             PQerrorMessage(((pg_connection_t *)*resource)->conn));
            h->adapter.destroy(h->adapter.ctx, *resource);
            *resource = NULL;
            rc = -1;
        }
    }
    pg_copy_str(err, errlen, rc == 0 ? "" : text);

    pthread_mutex_lock(&c->lock);
    if (h->active == m) {
        if (rc == 0) {
            if (h->state == RESPOOL_PG_HOST_CONNECTING || h->state == RESPOOL_PG_HOST_DOWN) {
                h->state = RESPOOL_PG_HOST_UP;
                elect_writer(c);
                pthread_cond_broadcast(&c->changed);
            }
            note_role(c, h, role);
        } else {
            pg_copy_str(h->last_error, sizeof h->last_error, text);
            if (h->state != RESPOOL_PG_HOST_DOWN) {
                /* A host that had connections may have checkouts waiting
                 * in its pool: the monitor swaps in a fresh pool, which
                 * sends them to the other hosts. */
                if (h->state != RESPOOL_PG_HOST_CONNECTING) {
                    h->swap_wanted = true;
                    pthread_cond_signal(&c->monitor_wake);
                }
                h->state = RESPOOL_PG_HOST_DOWN;
                h->times_down++;
                elect_writer(c);
                pthread_cond_broadcast(&c->changed);
            }
        }
    }
    pthread_mutex_unlock(&c->lock);
    return rc;
}

static void member_destroy(void *ctx, void *resource)
{
    member_t *m = ctx;
    m->host->adapter.destroy(m->host->adapter.ctx, resource);
}

static bool member_validate(void *ctx, void *resource)
{
    member_t *m = ctx;
    bool ok = m->host->adapter.validate(m->host->adapter.ctx, resource);
    if (ok)
        observe_role(m, ((pg_connection_t *)resource)->conn);
    return ok;
}

static bool member_reset(void *ctx, void *resource)
{
    member_t *m = ctx;
    bool ok = m->host->adapter.reset(m->host->adapter.ctx, resource);
    if (ok)
        observe_role(m, ((pg_connection_t *)resource)->conn);
    return ok;
}

/* A new member for h: a pool made with no connection (size 0), so that
 * making it never waits for the host; member_fill then sets the real size
 * and the core's manager connects in the background, retrying with backoff. */
static int member_new(respool_pg_cluster_t *c, host_t *h, member_t **out)
{
    member_t *m = calloc(1, sizeof *m);
    if (!m)
        return RESPOOL_ENOMEM;
    m->host = h;
    atomic_init(&m->users, 0);
    respool_config_t cfg = c->host_cfg;
    cfg.size = 0;
    cfg.max_overflow = c->host_cfg.size + c->host_cfg.max_overflow;
    respool_factory_t factory = {
        .create = member_create,
        .destroy = member_destroy,
        .validate = member_validate,
        .reset = member_reset,
        .ctx = m,
    };
    int rc = respool_create(&m->pool, &cfg, &factory);
    if (rc != RESPOOL_OK) {
        free(m);
        return rc;
    }
    *out = m;
    return RESPOOL_OK;
}

static void member_fill(respool_pg_cluster_t *c, member_t *m)
{
    respool_resize(m->pool, c->host_cfg.size, c->host_cfg.max_overflow);
}

/* Link a new member (lock held). */
static void member_link(respool_pg_cluster_t *c, member_t *m)
{
    m->next = c->members;
    c->members = m;
    m->host->members++;
}

/* Retire h's active member (lock held); the caller shuts it down after
 * unlocking, holding the use count taken here. */
static member_t *member_retire(member_t *m)
{
    m->retired = true;
    atomic_fetch_add(&m->users, 1);
    return m;
}

/* Shut a retired member down without waiting: waiting checkouts fail over,
 * idle connections go, leases coming back are destroyed. */
static void member_drain(member_t *m)
{
    respool_shutdown(m->pool, 0);
    atomic_fetch_sub(&m->users, 1);
}

static void host_free(host_t *h)
{
    if (!h)
        return;
    respool_pg_factory_free(h->factory);
    free(h->conninfo);
    free(h);
}

static int host_new(respool_pg_cluster_t *c, const host_spec_t *spec, host_t **out, char *err,
                    size_t errlen)
{
    host_t *h = calloc(1, sizeof *h);
    if (!h) {
        format_error(err, errlen, "out of memory");
        return RESPOOL_ENOMEM;
    }
    h->cluster = c;
    pg_copy_str(h->name, sizeof h->name, spec->name);
    h->conninfo = strdup(spec->conninfo);
    atomic_init(&h->role_seen, (int)RESPOOL_PG_ROLE_UNKNOWN);
    atomic_init(&h->checkouts, 0);
    if (!h->conninfo) {
        free(h);
        format_error(err, errlen, "out of memory");
        return RESPOOL_ENOMEM;
    }
    int rc = respool_pg_factory_init(&h->factory, h->conninfo, &c->opt, err, errlen);
    if (rc != RESPOOL_OK) {
        host_free(h);
        return rc;
    }
    h->adapter = respool_pg_factory(h->factory);
    *out = h;
    return RESPOOL_OK;
}

/* ------------------------------------------------------------------------ */
/* The monitor                                                               */
/* ------------------------------------------------------------------------ */

/* Ask h (through a connection of m) for its role; a connection that fails
 * the question is reported broken. */
static void check_role(respool_pg_cluster_t *c, member_t *m)
{
    respool_lease_t lease;
    if (respool_checkout_at(m->pool, 0, &lease, "respool_pg_cluster monitor", "check_role") !=
        RESPOOL_OK)
        return; /* all busy, or no connection: the traffic tells us instead */
    PGconn *conn = respool_pg_conn(&lease);
    respool_pg_role_t role = connection_role(m->host, conn, true);
    if (role == RESPOOL_PG_ROLE_UNKNOWN || PQstatus(conn) == CONNECTION_BAD) {
        respool_destroyed(m->pool, &lease);
        return;
    }
    pthread_mutex_lock(&c->lock);
    if (m->host->active == m)
        note_role(c, m->host, role);
    pthread_mutex_unlock(&c->lock);
    respool_checkin(m->pool, &lease);
}

/* One pass of the monitor (lock held on entry and exit; dropped around
 * every core call). Returns how long to sleep. */
static int64_t monitor_pass(respool_pg_cluster_t *c)
{
    /* 1. Hosts marked down: a fresh pool replaces the old one. */
    for (size_t i = 0; i < c->host_count; i++) {
        host_t *h = c->hosts[i];
        if (!h->swap_wanted || !h->active)
            continue;
        h->swap_wanted = false;
        member_t *old = h->active;
        pthread_mutex_unlock(&c->lock);
        member_t *fresh = NULL;
        int rc = member_new(c, h, &fresh);
        pthread_mutex_lock(&c->lock);
        if (rc != RESPOOL_OK) {
            /* No pool could be made: keep the old one (it retries by
             * itself) and drop its connections. */
            atomic_fetch_add(&old->users, 1);
            pthread_mutex_unlock(&c->lock);
            respool_evict_all(old->pool);
            atomic_fetch_sub(&old->users, 1);
            pthread_mutex_lock(&c->lock);
            continue;
        }
        member_link(c, fresh);
        bool current = h->active == old && !c->shutting_down;
        if (current)
            h->active = fresh;
        member_t *retired = member_retire(current ? old : fresh);
        pthread_mutex_unlock(&c->lock);
        member_drain(retired);
        if (current)
            member_fill(c, fresh);
        pthread_mutex_lock(&c->lock);
        return 0; /* the list may have changed meanwhile: start over */
    }

    /* 2. Roles: every role_check_ms, often while no primary is known. */
    int64_t now = pg_now_ms();
    int64_t period = c->writer ? c->role_check_ms : c->failover_poll_ms;
    if (c->monitor_poke) { /* a checkout waits for a role: ask every host now */
        c->monitor_poke = false;
        for (size_t i = 0; i < c->host_count; i++)
            c->hosts[i]->role_checked_ms = now - period;
    }
    int64_t sleep_ms = period;
    for (size_t i = 0; i < c->host_count; i++) {
        host_t *h = c->hosts[i];
        if (!h->active || (h->state != RESPOOL_PG_HOST_UP && h->state != RESPOOL_PG_HOST_FENCED))
            continue;
        int64_t due = h->role_checked_ms + period;
        if (due > now) {
            if (due - now < sleep_ms)
                sleep_ms = due - now;
            continue;
        }
        member_t *m = h->active;
        atomic_fetch_add(&m->users, 1);
        h->role_checked_ms = now; /* even if it cannot be asked now */
        pthread_mutex_unlock(&c->lock);
        check_role(c, m);
        atomic_fetch_sub(&m->users, 1);
        pthread_mutex_lock(&c->lock);
        return 0;
    }

    /* 3. Free retired members that are drained and unused, and removed
     * hosts whose last member went. Candidates are collected first (with a
     * use count each), shut down with timeout 0 outside the lock, and freed
     * if that said every lease is back and nobody else came meanwhile; one
     * still draining does not hold up the others. */
    member_t *candidates[2 * MAX_HOSTS];
    size_t n = 0;
    for (member_t *m = c->members; m && n < 2 * MAX_HOSTS; m = m->next)
        if (m->retired && atomic_load(&m->users) == 0) {
            atomic_fetch_add(&m->users, 1);
            candidates[n++] = m;
        }
    if (n == 0) {
        for (member_t *m = c->members; m; m = m->next)
            if (m->retired && sleep_ms > REAP_INTERVAL_MS)
                sleep_ms = REAP_INTERVAL_MS;
        return sleep_ms;
    }
    bool drained[2 * MAX_HOSTS];
    pthread_mutex_unlock(&c->lock);
    for (size_t i = 0; i < n; i++)
        drained[i] = respool_shutdown(candidates[i]->pool, 0) == RESPOOL_OK;
    pthread_mutex_lock(&c->lock);
    size_t freed = 0;
    for (size_t i = 0; i < n; i++) {
        member_t *m = candidates[i];
        if (atomic_fetch_sub(&m->users, 1) != 1 || !drained[i]) {
            candidates[i] = NULL;
            continue;
        }
        for (member_t **link = &c->members; *link; link = &(*link)->next)
            if (*link == m) { /* found again: the list may have changed */
                *link = m->next;
                break;
            }
        freed++;
    }
    pthread_mutex_unlock(&c->lock);
    for (size_t i = 0; i < n; i++)
        if (candidates[i])
            respool_free(candidates[i]->pool);
    pthread_mutex_lock(&c->lock);
    for (size_t i = 0; i < n; i++) {
        member_t *m = candidates[i];
        if (!m)
            continue;
        host_t *h = m->host;
        free(m);
        if (--h->members == 0 && h->removed) {
            for (host_t **r = &c->removed; *r; r = &(*r)->next_removed)
                if (*r == h) {
                    *r = h->next_removed;
                    break;
                }
            host_free(h);
        }
    }
    return freed > 0 ? 0 : sleep_ms < REAP_INTERVAL_MS ? sleep_ms : REAP_INTERVAL_MS;
}

static void *monitor_main(void *arg)
{
    respool_pg_cluster_t *c = arg;
    pthread_mutex_lock(&c->lock);
    while (!c->stopping) {
        int64_t sleep_ms = monitor_pass(c);
        if (sleep_ms > 0 && !c->stopping && !c->monitor_poke) {
            bool swap = false;
            for (size_t i = 0; i < c->host_count; i++)
                swap |= c->hosts[i]->swap_wanted;
            if (!swap) {
                struct timespec until = abstime_in(sleep_ms);
                pthread_cond_timedwait(&c->monitor_wake, &c->lock, &until);
            }
        }
    }
    pthread_mutex_unlock(&c->lock);
    return NULL;
}

/* ------------------------------------------------------------------------ */
/* Host list                                                                 */
/* ------------------------------------------------------------------------ */

/* Install specs as the host list: hosts already listed (same conninfo) keep
 * their pool, new ones get one, unlisted ones are retired. */
static int install_hosts(respool_pg_cluster_t *c, const spec_list_t *specs, char *err,
                         size_t errlen)
{
    host_t **list = calloc(specs->count, sizeof *list);
    bool *fresh = calloc(specs->count, sizeof *fresh);
    member_t **started = calloc(specs->count, sizeof *started);
    int rc = RESPOOL_ENOMEM;
    if (!list || !fresh || !started) {
        format_error(err, errlen, "out of memory");
        goto fail;
    }
    pthread_mutex_lock(&c->lock);
    bool shutting_down = c->shutting_down;
    for (size_t i = 0; i < specs->count && !shutting_down; i++)
        for (size_t j = 0; j < c->host_count; j++)
            if (strcmp(c->hosts[j]->conninfo, specs->items[i].conninfo) == 0)
                list[i] = c->hosts[j];
    pthread_mutex_unlock(&c->lock);
    if (shutting_down) {
        format_error(err, errlen, "the cluster pool is shutting down");
        rc = RESPOOL_ESHUTDOWN;
        goto fail;
    }
    /* New hosts: a factory and an empty pool each, made outside the lock. */
    for (size_t i = 0; i < specs->count; i++) {
        if (list[i])
            continue;
        rc = host_new(c, &specs->items[i], &list[i], err, errlen);
        if (rc == RESPOOL_OK) {
            fresh[i] = true;
            rc = member_new(c, list[i], &started[i]);
            if (rc != RESPOOL_OK)
                format_error(err, errlen, "could not start a pool for %s: %s", list[i]->name,
                             respool_strerror(rc));
        }
        if (rc != RESPOOL_OK)
            goto fail;
    }

    member_t *retired[MAX_HOSTS];
    size_t retired_count = 0;
    pthread_mutex_lock(&c->lock);
    if (c->shutting_down) { /* shutdown began while the new pools were made */
        pthread_mutex_unlock(&c->lock);
        format_error(err, errlen, "the cluster pool is shutting down");
        rc = RESPOOL_ESHUTDOWN;
        goto fail;
    }
    for (size_t j = 0; j < c->host_count; j++) {
        host_t *h = c->hosts[j];
        bool kept = false;
        for (size_t i = 0; i < specs->count; i++)
            kept |= list[i] == h;
        if (kept)
            continue;
        h->removed = true;
        h->swap_wanted = false;
        if (h->active)
            retired[retired_count++] = member_retire(h->active);
        h->active = NULL;
        h->next_removed = c->removed;
        c->removed = h;
    }
    for (size_t i = 0; i < specs->count; i++) {
        if (!fresh[i])
            continue;
        list[i]->active = started[i];
        member_link(c, started[i]);
    }
    free(c->hosts);
    c->hosts = list;
    c->host_count = specs->count;
    if (c->cursor >= c->host_count)
        c->cursor = 0;
    elect_writer(c);
    pthread_cond_broadcast(&c->changed);
    pthread_cond_signal(&c->monitor_wake);
    pthread_mutex_unlock(&c->lock);

    for (size_t k = 0; k < retired_count; k++)
        member_drain(retired[k]);
    for (size_t i = 0; i < specs->count; i++)
        if (fresh[i])
            member_fill(c, started[i]);
    free(fresh);
    free(started);
    return RESPOOL_OK;

fail:
    for (size_t i = 0; list && i < specs->count; i++) {
        if (!fresh || !fresh[i])
            continue;
        if (started && started[i]) {
            respool_free(started[i]->pool);
            free(started[i]);
        }
        host_free(list[i]);
    }
    free(list);
    free(fresh);
    free(started);
    return rc;
}

RESPOOL_API int respool_pg_cluster_set_host_list(respool_pg_cluster_t *cluster,
                                                 const char *const *conninfos, size_t count,
                                                 char *err, size_t errlen)
{
    if (err && errlen > 0)
        err[0] = '\0';
    if (!cluster || !conninfos) {
        format_error(err, errlen, "NULL argument");
        return RESPOOL_EINVAL;
    }
    if (in_fork_child(cluster)) {
        format_error(err, errlen, "cluster pool used in a fork() child");
        return RESPOOL_ESHUTDOWN;
    }
    spec_list_t specs;
    int rc = specs_from_list(&specs, conninfos, count, &cluster->opt, err, errlen);
    if (rc != RESPOOL_OK)
        return rc;
    pthread_mutex_lock(&cluster->update_lock);
    rc = install_hosts(cluster, &specs, err, errlen);
    pthread_mutex_unlock(&cluster->update_lock);
    specs_free(&specs);
    return rc;
}

RESPOOL_API int respool_pg_cluster_set_hosts(respool_pg_cluster_t *cluster, const char *conninfo,
                                             char *err, size_t errlen)
{
    const char *one[1] = {conninfo};
    if (!conninfo) {
        format_error(err, errlen, "NULL argument");
        return RESPOOL_EINVAL;
    }
    return respool_pg_cluster_set_host_list(cluster, one, 1, err, errlen);
}

/* ------------------------------------------------------------------------ */
/* Making and freeing                                                        */
/* ------------------------------------------------------------------------ */

/* Free everything; the monitor is stopped and no call is in progress. */
static void cluster_release(respool_pg_cluster_t *c)
{
    for (member_t *m = c->members, *next; m; m = next) {
        next = m->next;
        respool_free(m->pool);
        free(m);
    }
    for (size_t i = 0; i < c->host_count; i++)
        host_free(c->hosts[i]);
    for (host_t *h = c->removed, *next; h; h = next) {
        next = h->next_removed;
        host_free(h);
    }
    free(c->hosts);
    free(c->reset_query);
    if (!in_fork_child(c)) {
        pthread_mutex_destroy(&c->lock);
        pthread_mutex_destroy(&c->update_lock);
        pthread_cond_destroy(&c->changed);
        pthread_cond_destroy(&c->monitor_wake);
    }
    free(c);
}

/* After the first host list is installed: wait until every host has
 * connected or failed once, and fail when none is up. */
static int await_first_contact(respool_pg_cluster_t *c, char *err, size_t errlen)
{
    long longest = 0;
    for (size_t i = 0; i < c->host_count; i++) {
        long t = pg_factory_connect_timeout_ms(c->hosts[i]->factory);
        if (t > longest)
            longest = t;
    }
    /* A host may need a few attempts if its first ones race a restart;
     * one connect timeout plus slack bounds the wait. */
    int64_t deadline = pg_now_ms() + longest + 1000;
    pthread_mutex_lock(&c->lock);
    for (;;) {
        size_t connecting = 0, up = 0;
        for (size_t i = 0; i < c->host_count; i++) {
            connecting += c->hosts[i]->state == RESPOOL_PG_HOST_CONNECTING;
            up += c->hosts[i]->state != RESPOOL_PG_HOST_CONNECTING &&
                  c->hosts[i]->state != RESPOOL_PG_HOST_DOWN;
        }
        if (connecting == 0 || pg_now_ms() >= deadline) {
            int rc = RESPOOL_OK;
            if (up == 0) {
                size_t used = 0;
                format_error(err, errlen, "no host could be reached:");
                used = err ? strlen(err) : 0;
                for (size_t i = 0; i < c->host_count && err && used + 1 < errlen; i++) {
                    host_t *h = c->hosts[i];
                    snprintf(err + used, errlen - used, "%s %s: %s", i ? ";" : "", h->name,
                             h->last_error[0] ? h->last_error : "no answer yet");
                    used = strlen(err);
                }
                rc = RESPOOL_EFACTORY;
            }
            pthread_mutex_unlock(&c->lock);
            return rc;
        }
        struct timespec until = abstime_at(deadline);
        pthread_cond_timedwait(&c->changed, &c->lock, &until);
    }
}

RESPOOL_API int respool_pg_cluster_create_list(respool_pg_cluster_t **out,
                                               const char *const *conninfos, size_t count,
                                               const respool_pg_cluster_config_t *cfg,
                                               const respool_pg_options_t *opt, char *err,
                                               size_t errlen)
{
    if (err && errlen > 0)
        err[0] = '\0';
    if (!out) {
        format_error(err, errlen, "NULL argument");
        return RESPOOL_EINVAL;
    }
    *out = NULL;
    pthread_once(&fork_once, register_fork_handler);
    respool_pg_cluster_config_t defaults = {0};
    defaults.host.size = 1;
    if (!cfg)
        cfg = &defaults;
    if (cfg->host.size == 0) {
        format_error(err, errlen, "config.host.size is 0: each host keeps at least one "
                                  "connection (it is how the pool learns the host's role "
                                  "and health)");
        return RESPOOL_EINVAL;
    }
    respool_pg_options_t no_options = {0};
    respool_pg_cluster_t *c = calloc(1, sizeof *c);
    if (!c) {
        format_error(err, errlen, "out of memory");
        return RESPOOL_ENOMEM;
    }
    c->fork_generation = atomic_load(&fork_generation);
    c->host_cfg = cfg->host;
    c->opt = opt ? *opt : no_options;
    if (pg_check_duration(cfg->role_check_ms, DEFAULT_ROLE_CHECK_MS, &c->role_check_ms) != 0 ||
        pg_check_duration(cfg->failover_poll_ms, DEFAULT_FAILOVER_POLL_MS,
                       &c->failover_poll_ms) != 0) {
        free(c);
        format_error(err, errlen, "invalid role_check_ms or failover_poll_ms");
        return RESPOOL_EINVAL;
    }
    if (c->opt.reset_query) {
        c->reset_query = strdup(c->opt.reset_query);
        if (!c->reset_query) {
            free(c);
            format_error(err, errlen, "out of memory");
            return RESPOOL_ENOMEM;
        }
        c->opt.reset_query = c->reset_query;
    }
    pthread_condattr_t attr;
    pthread_condattr_init(&attr);
    pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
    pthread_mutex_init(&c->lock, NULL);
    pthread_mutex_init(&c->update_lock, NULL);
    pthread_cond_init(&c->changed, &attr);
    pthread_cond_init(&c->monitor_wake, &attr);
    pthread_condattr_destroy(&attr);

    spec_list_t specs;
    int rc = specs_from_list(&specs, conninfos, count, &c->opt, err, errlen);
    if (rc == RESPOOL_OK) {
        /* The adapter's settings on each host's pool, checked once here as
         * respool_pg_pool_create checks them (a factory of the first host
         * knows the effective validate_idle_ms). */
        respool_pg_factory_t *probe = NULL;
        rc = respool_pg_factory_init(&probe, specs.items[0].conninfo, &c->opt, err, errlen);
        if (rc == RESPOOL_OK) {
            respool_pg_config_apply(probe, &c->host_cfg);
            if (c->host_cfg.keepalive_ms > 0 &&
                pg_factory_validate_idle_ms(probe) > c->host_cfg.keepalive_ms) {
                format_error(err, errlen,
                             "keepalive_ms (%ld) is below the adapter's validate_idle_ms "
                             "(%ld), so keepalive would never ping",
                             c->host_cfg.keepalive_ms, pg_factory_validate_idle_ms(probe));
                rc = RESPOOL_EINVAL;
            }
            respool_pg_factory_free(probe);
        }
        if (rc == RESPOOL_OK)
            rc = install_hosts(c, &specs, err, errlen);
        specs_free(&specs);
    }
    if (rc == RESPOOL_OK) {
        if (pthread_create(&c->monitor, NULL, monitor_main, c) != 0) {
            format_error(err, errlen, "could not start the monitor thread");
            rc = RESPOOL_ENOMEM;
        } else {
            c->monitor_started = true;
            rc = await_first_contact(c, err, errlen);
        }
    }
    if (rc != RESPOOL_OK) {
        respool_pg_cluster_free(c);
        return rc;
    }
    *out = c;
    return RESPOOL_OK;
}

RESPOOL_API int respool_pg_cluster_create(respool_pg_cluster_t **out, const char *conninfo,
                                          const respool_pg_cluster_config_t *cfg,
                                          const respool_pg_options_t *opt, char *err,
                                          size_t errlen)
{
    if (!conninfo) {
        if (out)
            *out = NULL;
        format_error(err, errlen, "NULL argument");
        return RESPOOL_EINVAL;
    }
    const char *one[1] = {conninfo};
    return respool_pg_cluster_create_list(out, one, 1, cfg, opt, err, errlen);
}

RESPOOL_API int respool_pg_cluster_shutdown(respool_pg_cluster_t *cluster, long timeout_ms)
{
    if (!cluster)
        return RESPOOL_EINVAL;
    if (in_fork_child(cluster))
        return RESPOOL_OK; /* as the core: nothing to wait for in a child */
    int64_t deadline = timeout_ms >= 0 ? pg_now_ms() + timeout_ms : -1;
    pthread_mutex_lock(&cluster->lock);
    cluster->shutting_down = true;
    pthread_cond_broadcast(&cluster->changed);
    size_t n = 0;
    for (member_t *m = cluster->members; m; m = m->next)
        n++;
    member_t **all = calloc(n ? n : 1, sizeof *all);
    if (!all) {
        pthread_mutex_unlock(&cluster->lock);
        return RESPOOL_ENOMEM;
    }
    n = 0;
    for (member_t *m = cluster->members; m; m = m->next) {
        atomic_fetch_add(&m->users, 1);
        all[n++] = m;
    }
    pthread_mutex_unlock(&cluster->lock);
    int result = RESPOOL_OK;
    for (size_t i = 0; i < n; i++) {
        long left = -1;
        if (deadline >= 0) {
            int64_t l = deadline - pg_now_ms();
            left = l > 0 ? (long)l : 0;
        }
        if (respool_shutdown(all[i]->pool, left) != RESPOOL_OK)
            result = RESPOOL_EBUSY;
        atomic_fetch_sub(&all[i]->users, 1);
    }
    free(all);
    return result;
}

RESPOOL_API void respool_pg_cluster_free(respool_pg_cluster_t *cluster)
{
    if (!cluster)
        return;
    if (!in_fork_child(cluster)) {
        respool_pg_cluster_shutdown(cluster, -1);
        pthread_mutex_lock(&cluster->lock);
        cluster->stopping = true;
        pthread_cond_signal(&cluster->monitor_wake);
        pthread_mutex_unlock(&cluster->lock);
        if (cluster->monitor_started)
            pthread_join(cluster->monitor, NULL);
    }
    cluster_release(cluster);
}

/* ------------------------------------------------------------------------ */
/* Checkout and checkin                                                      */
/* ------------------------------------------------------------------------ */

/* Does h take checkouts for target (lock held)? */
static bool host_fits(const respool_pg_cluster_t *c, const host_t *h, respool_pg_target_t target)
{
    if (!h->active || h->state != RESPOOL_PG_HOST_UP)
        return false;
    switch (target) {
    case RESPOOL_PG_PRIMARY: return h == c->writer;
    case RESPOOL_PG_REPLICA: return h->role == RESPOOL_PG_ROLE_REPLICA;
    case RESPOOL_PG_ANY: return h == c->writer || h->role == RESPOOL_PG_ROLE_REPLICA;
    }
    return false;
}

/* The hosts a checkout may use, in round-robin order, each active member
 * with a use count taken (lock held). A replica checkout falls back to the
 * writer when no replica is up. */
static size_t pick_members(respool_pg_cluster_t *c, respool_pg_target_t target,
                           member_t **out)
{
    member_t *fitting[MAX_HOSTS];
    size_t n = 0;
    for (size_t k = 0; k < c->host_count; k++)
        if (host_fits(c, c->hosts[k], target))
            fitting[n++] = c->hosts[k]->active;
    if (n == 0 && target == RESPOOL_PG_REPLICA && c->writer &&
        host_fits(c, c->writer, RESPOOL_PG_PRIMARY))
        fitting[n++] = c->writer->active;
    /* Rotate over the fitting hosts only, so each gets its turn. */
    size_t start = n ? c->cursor++ % n : 0;
    for (size_t i = 0; i < n; i++) {
        out[i] = fitting[(start + i) % n];
        atomic_fetch_add(&out[i]->users, 1);
    }
    return n;
}

static void release_members(member_t **members, size_t n, member_t *keep)
{
    for (size_t i = 0; i < n; i++)
        if (members[i] && members[i] != keep)
            atomic_fetch_sub(&members[i]->users, 1);
}

/* The function name a checkout records on its lease ("cluster checkout
 * (any)"), naming what it asked for in holder reports. */
static const char *target_name(respool_pg_target_t target)
{
    switch (target) {
    case RESPOOL_PG_PRIMARY: return "cluster checkout (primary)";
    case RESPOOL_PG_REPLICA: return "cluster checkout (replica)";
    case RESPOOL_PG_ANY: break;
    }
    return "cluster checkout (any)";
}

/* "no primary is up: a:5432 down (…); b:5433 replica up" (lock held). */
static void describe_hosts(const respool_pg_cluster_t *c, respool_pg_target_t target,
                           const char *outcome)
{
    static const char *const wanted[] = {"host", "primary", "replica"};
    size_t used = (size_t)snprintf(cluster_error_text, sizeof cluster_error_text,
                                   "%s: no %s is up:", outcome, wanted[target]);
    for (size_t i = 0; i < c->host_count && used + 1 < sizeof cluster_error_text; i++) {
        const host_t *h = c->hosts[i];
        used += (size_t)snprintf(cluster_error_text + used, sizeof cluster_error_text - used,
                                 "%s %s %s %s%s%s%s", i ? ";" : "", h->name,
                                 respool_pg_role_name(h->role),
                                 respool_pg_host_state_name(h->state),
                                 h->state == RESPOOL_PG_HOST_DOWN ? " (" : "",
                                 h->state == RESPOOL_PG_HOST_DOWN ? h->last_error : "",
                                 h->state == RESPOOL_PG_HOST_DOWN ? ")" : "");
    }
    if (c->host_count == 0)
        snprintf(cluster_error_text + used, sizeof cluster_error_text - used, " no hosts");
}

/* The core's explanation of a failed checkout on m, naming the host. */
static void describe_pool_failure(const member_t *m)
{
    char core[768];
    respool_checkout_error(core, sizeof core);
    cluster_error("%s: %s", m->host->name, core);
}

/* A core checkout on m succeeded. The host may have stopped fitting while
 * the checkout ran or waited (marked down or removed, fenced, no longer the
 * writer): then the connection goes back and the caller looks again.
 * Returns true when the lease stands. Drops m's use count either way. */
static bool checkout_done(respool_pg_cluster_t *c, member_t *m, respool_pg_target_t target,
                          respool_lease_t *lease)
{
    pthread_mutex_lock(&c->lock);
    host_t *h = m->host;
    bool fits = h->active == m &&
                (host_fits(c, h, target) ||
                 (target == RESPOOL_PG_REPLICA && h == c->writer &&
                  host_fits(c, h, RESPOOL_PG_PRIMARY)));
    pthread_mutex_unlock(&c->lock);
    if (fits)
        atomic_fetch_add_explicit(&h->checkouts, 1, memory_order_relaxed);
    else
        respool_checkin(m->pool, lease);
    atomic_fetch_sub(&m->users, 1);
    return fits;
}

RESPOOL_API int respool_pg_cluster_checkout_at(respool_pg_cluster_t *c,
                                               respool_pg_target_t target, long timeout_ms,
                                               respool_lease_t *lease, const char *site,
                                               const char *function)
{
    if (!c || !lease || (target != RESPOOL_PG_ANY && target != RESPOOL_PG_PRIMARY &&
                         target != RESPOOL_PG_REPLICA)) {
        cluster_error("invalid argument");
        return RESPOOL_EINVAL;
    }
    lease->resource = NULL;
    if (in_fork_child(c)) {
        cluster_error("cluster pool used in a fork() child");
        return RESPOOL_ESHUTDOWN;
    }
    if (!site) { /* the plain function: name the target in holder reports */
        site = "respool_pg_cluster_checkout";
        function = target_name(target);
    }
    if (timeout_ms > MAX_DURATION_MS)
        timeout_ms = MAX_DURATION_MS;
    int64_t deadline = timeout_ms > 0 ? pg_now_ms() + timeout_ms : -1;
    member_t *members[MAX_HOSTS];
    for (;;) {
        pthread_mutex_lock(&c->lock);
        if (c->shutting_down) {
            pthread_mutex_unlock(&c->lock);
            cluster_error("the cluster pool is shutting down");
            return RESPOOL_ESHUTDOWN;
        }
        size_t n = pick_members(c, target, members);
        if (n == 0) {
            /* Nothing fits now: wait for a host to come up or a replica to
             * be promoted, and have the monitor look at roles at once. */
            if (timeout_ms == 0) {
                describe_hosts(c, target, "checkout failed");
                pthread_mutex_unlock(&c->lock);
                return RESPOOL_EFACTORY;
            }
            c->monitor_poke = true;
            pthread_cond_signal(&c->monitor_wake);
            int wait_rc = 0;
            if (deadline < 0) {
                pthread_cond_wait(&c->changed, &c->lock);
            } else {
                struct timespec until = abstime_at(deadline);
                wait_rc = pthread_cond_timedwait(&c->changed, &c->lock, &until);
            }
            if (wait_rc == ETIMEDOUT || (deadline >= 0 && pg_now_ms() >= deadline)) {
                describe_hosts(c, target, "checkout timed out");
                pthread_mutex_unlock(&c->lock);
                return RESPOOL_ETIMEDOUT;
            }
            pthread_mutex_unlock(&c->lock);
            continue;
        }
        pthread_mutex_unlock(&c->lock);

        /* Round-robin: the first fitting host with an idle connection. */
        size_t full = 0;
        member_t *last_full = NULL;
        bool stale = false;
        for (size_t i = 0; i < n && !stale; i++) {
            int rc = respool_checkout_at(members[i]->pool, 0, lease, site, function);
            if (rc == RESPOOL_OK) {
                member_t *got = members[i];
                release_members(members, n, got);
                for (size_t k = 0; k < n; k++)
                    members[k] = NULL; /* every use count is dropped now */
                if (checkout_done(c, got, target, lease))
                    return RESPOOL_OK;
                stale = true; /* it stopped fitting meanwhile: look again */
                continue;
            }
            if (rc == RESPOOL_EFULL) {
                full++;
                last_full = members[i];
            } else {
                /* EFACTORY (the host just went down) or ESHUTDOWN (its
                 * pool was retired): never wait there. */
                atomic_fetch_sub(&members[i]->users, 1);
                members[i] = NULL;
            }
        }
        if (full == 0 || stale) {
            if (deadline >= 0 && pg_now_ms() >= deadline) {
                cluster_error("checkout timed out while hosts failed over");
                return RESPOOL_ETIMEDOUT;
            }
            continue; /* the hosts changed under us: look again */
        }
        if (timeout_ms == 0) {
            describe_pool_failure(last_full);
            release_members(members, n, NULL);
            return RESPOOL_EFULL;
        }

        /* Every fitting host is exhausted: wait on the least busy one. */
        pthread_mutex_lock(&c->lock);
        member_t *best = NULL;
        for (size_t i = 0; i < n; i++)
            if (members[i] && (!best || members[i]->host->waiting < best->host->waiting))
                best = members[i];
        best->host->waiting++;
        pthread_mutex_unlock(&c->lock);
        release_members(members, n, best);

        long wait_ms = -1;
        if (deadline >= 0) {
            int64_t left = deadline - pg_now_ms();
            wait_ms = left > 0 ? (long)left : 0;
        }
        int rc = wait_ms == 0 ? RESPOOL_ETIMEDOUT
                              : respool_checkout_at(best->pool, wait_ms, lease, site,
                                                    function);
        pthread_mutex_lock(&c->lock);
        best->host->waiting--;
        pthread_mutex_unlock(&c->lock);
        if (rc == RESPOOL_OK) {
            if (checkout_done(c, best, target, lease))
                return RESPOOL_OK;
            continue; /* it stopped fitting while we waited: look again */
        }
        if (rc == RESPOOL_EFULL) { /* shed by the host's max_waiting or admission */
            describe_pool_failure(best);
            atomic_fetch_sub(&best->users, 1);
            return RESPOOL_EFULL;
        }
        if (rc == RESPOOL_ETIMEDOUT) {
            describe_pool_failure(best);
            atomic_fetch_sub(&best->users, 1);
            return RESPOOL_ETIMEDOUT;
        }
        atomic_fetch_sub(&best->users, 1);
        /* ESHUTDOWN: the host was marked down or removed while we waited,
         * or the cluster is shutting down: look again. */
    }
}

RESPOOL_API int(respool_pg_cluster_checkout)(respool_pg_cluster_t *cluster,
                                             respool_pg_target_t target, long timeout_ms,
                                             respool_lease_t *lease)
{
    return respool_pg_cluster_checkout_at(cluster, target, timeout_ms, lease, NULL, NULL);
}

/* The member whose pool issued lease, with a use count taken; NULL when
 * none (a lease from elsewhere, or of a member already freed). */
static member_t *member_of(respool_pg_cluster_t *c, const respool_lease_t *lease)
{
    member_t *found = NULL;
    pthread_mutex_lock(&c->lock);
    for (member_t *m = c->members; m; m = m->next)
        if ((const void *)m->pool == lease->private_.pool) {
            atomic_fetch_add(&m->users, 1);
            found = m;
            break;
        }
    pthread_mutex_unlock(&c->lock);
    return found;
}

static int give_back(respool_pg_cluster_t *c, respool_lease_t *lease, bool broken)
{
    if (!c || !lease)
        return RESPOOL_EINVAL;
    if (in_fork_child(c))
        return RESPOOL_EINVAL; /* as the core in a child */
    member_t *m = member_of(c, lease);
    if (!m)
        return RESPOOL_EINVAL;
    int rc = broken ? respool_destroyed(m->pool, lease) : respool_checkin(m->pool, lease);
    atomic_fetch_sub(&m->users, 1);
    return rc;
}

RESPOOL_API int respool_pg_cluster_checkin(respool_pg_cluster_t *cluster, respool_lease_t *lease)
{
    return give_back(cluster, lease, false);
}

RESPOOL_API int respool_pg_cluster_destroyed(respool_pg_cluster_t *cluster,
                                             respool_lease_t *lease)
{
    return give_back(cluster, lease, true);
}

RESPOOL_API int respool_pg_cluster_run_at(respool_pg_cluster_t *cluster,
                                          respool_pg_target_t target, long timeout_ms,
                                          respool_pg_fn fn, void *arg, const char *site,
                                          const char *function)
{
    if (!cluster || !fn)
        return RESPOOL_EINVAL;
    respool_lease_t lease;
    int rc = respool_pg_cluster_checkout_at(cluster, target, timeout_ms, &lease, site, function);
    if (rc != RESPOOL_OK)
        return rc;
    PGconn *conn = respool_pg_conn(&lease);
    bool ok = fn(conn, arg);
    give_back(cluster, &lease, PQstatus(conn) == CONNECTION_BAD);
    return ok ? RESPOOL_OK : RESPOOL_PG_EWORK;
}

RESPOOL_API int(respool_pg_cluster_run)(respool_pg_cluster_t *cluster,
                                        respool_pg_target_t target, long timeout_ms,
                                        respool_pg_fn fn, void *arg)
{
    return respool_pg_cluster_run_at(cluster, target, timeout_ms, fn, arg, NULL, NULL);
}

/* ------------------------------------------------------------------------ */
/* Stats                                                                     */
/* ------------------------------------------------------------------------ */

RESPOOL_API size_t respool_pg_cluster_host_count(respool_pg_cluster_t *cluster)
{
    if (!cluster || in_fork_child(cluster))
        return 0;
    pthread_mutex_lock(&cluster->lock);
    size_t n = cluster->host_count;
    pthread_mutex_unlock(&cluster->lock);
    return n;
}

RESPOOL_API int respool_pg_cluster_host(respool_pg_cluster_t *cluster, size_t index,
                                        respool_pg_host_info_t *out)
{
    if (!cluster || !out || in_fork_child(cluster))
        return RESPOOL_EINVAL;
    pthread_mutex_lock(&cluster->lock);
    if (index >= cluster->host_count) {
        pthread_mutex_unlock(&cluster->lock);
        return RESPOOL_EINVAL;
    }
    host_t *h = cluster->hosts[index];
    memset(out, 0, sizeof *out);
    pg_copy_str(out->name, sizeof out->name, h->name);
    out->role = h->role;
    out->state = h->state;
    out->writer = h == cluster->writer;
    out->checkouts = atomic_load(&h->checkouts);
    out->times_down = h->times_down;
    pg_copy_str(out->last_error, sizeof out->last_error, h->last_error);
    member_t *m = h->active;
    if (m)
        atomic_fetch_add(&m->users, 1);
    pthread_mutex_unlock(&cluster->lock);
    if (m) {
        respool_stats(m->pool, &out->stats);
        atomic_fetch_sub(&m->users, 1);
    }
    return RESPOOL_OK;
}

static void latency_merge(respool_latency_t *total, const respool_latency_t *one)
{
    total->count += one->count;
    total->sum_ns += one->sum_ns;
#define KEEP_MAX(field)                                                                  \
    if (one->field > total->field)                                                       \
        total->field = one->field;
    KEEP_MAX(p50_ns)
    KEEP_MAX(p90_ns)
    KEEP_MAX(p99_ns)
    KEEP_MAX(p999_ns)
    KEEP_MAX(max_ns)
#undef KEEP_MAX
}

RESPOOL_API void respool_pg_cluster_stats(respool_pg_cluster_t *cluster, respool_stats_t *out)
{
    if (!cluster || !out)
        return;
    memset(out, 0, sizeof *out);
    out->state = RESPOOL_SHUTDOWN;
    size_t n = respool_pg_cluster_host_count(cluster);
    for (size_t i = 0; i < n; i++) {
        respool_pg_host_info_t info;
        if (respool_pg_cluster_host(cluster, i, &info) != RESPOOL_OK)
            break; /* the list shrank meanwhile */
        const respool_stats_t *s = &info.stats;
        if (s->state < out->state)
            out->state = s->state;
        out->size += s->size;
        out->max_overflow += s->max_overflow;
        out->idle += s->idle;
        out->busy += s->busy;
        out->overflow += s->overflow;
        out->creating += s->creating;
        out->waiting += s->waiting;
        out->created += s->created;
        out->destroyed += s->destroyed;
        out->checkouts += s->checkouts;
        out->timeouts += s->timeouts;
        out->create_failures += s->create_failures;
        out->destroying += s->destroying;
        out->waits += s->waits;
        out->wait_ns_total += s->wait_ns_total;
        if (s->wait_ns_max > out->wait_ns_max)
            out->wait_ns_max = s->wait_ns_max;
        out->reported_broken += s->reported_broken;
        out->validate_failures += s->validate_failures;
        out->reset_failures += s->reset_failures;
        out->dismissed += s->dismissed;
        out->expired += s->expired;
        out->leaks += s->leaks;
        if (s->consecutive_create_failures > out->consecutive_create_failures)
            out->consecutive_create_failures = s->consecutive_create_failures;
        out->evicted += s->evicted;
        out->detached += s->detached;
        out->shed += s->shed;
        out->paused |= s->paused;
        latency_merge(&out->checkout_wait, &s->checkout_wait);
        latency_merge(&out->hold, &s->hold);
        latency_merge(&out->create, &s->create);
        latency_merge(&out->validate, &s->validate);
    }
}
