/* /metrics: the families an operator watches a node's runtime by, gathered at scrape
 * time from the module that owns each one (see README "Metrics" for the list). */
#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <time.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>
#include <microhttpd.h>

#include "daemon.h"
#include "dispatch.h"
#include "grpc_server.h"
#include "metrics.h"
#include "remora/cleanup.h"
#include "remora/clock.h"
#include "remora/confsect.h"
#include "remora/fsutil.h"
#include "remora/log.h"
#include "remora/xalloc.h"

/* How often the remora-shim processes are counted: a walk of /proc costs about as much
 * as everything else in a scrape at 110 pods, so it runs beside the scrapes. */
#define SHIM_COUNT_MS 5000

struct rm_metrics_server {
        struct MHD_Daemon *mhd;
        struct rm_daemon *d;
        char address[128];
        char *unix_path; /* removed at close */
        pthread_t counter;
        bool counting; /* the counter thread runs */
        pthread_mutex_t lock;
        pthread_cond_t stop_cv;
        bool stop;
        atomic_long shims; /* the last count; -1 before the first */
};

static void write_states(FILE *out, const char *name, const char *help, const char *const *states,
                         const size_t *counts, size_t n)
{
        rm_metrics_family(out, name, "gauge", help);
        for (size_t i = 0; i < n; i++) {
                char labels[64];
                snprintf(labels, sizeof(labels), "state=\"%s\"", states[i]);
                rm_metrics_sample(out, name, labels, (double)counts[i]);
        }
}

static void write_objects(struct rm_daemon *d, FILE *out)
{
        struct rm_arena *a = rm_arena_new();
        static const char *const pod_states[] = {"ready", "notready"};
        size_t pods[2] = {0};
        if (d->sandboxes) {
                Runtime__V1__ListPodSandboxResponse *l = rm_sandbox_list(d->sandboxes, NULL, a);
                for (size_t i = 0; i < l->n_items; i++)
                        pods[l->items[i]->state == RUNTIME__V1__POD_SANDBOX_STATE__SANDBOX_READY
                                 ? 0
                                 : 1]++;
        }
        write_states(out, "remora_pods", "Pod sandboxes by state.", pod_states, pods, 2);
        /* CRI's ContainerState numbering: created, running, exited, unknown. */
        static const char *const ctr_states[] = {"created", "running", "exited", "unknown"};
        size_t ctrs[4] = {0};
        if (d->containers) {
                Runtime__V1__ListContainersResponse *l = rm_containers_list(d->containers, NULL, a);
                for (size_t i = 0; i < l->n_containers; i++) {
                        unsigned s = (unsigned)l->containers[i]->state;
                        ctrs[s < 4 ? s : 3]++;
                }
        }
        write_states(out, "remora_containers", "Containers by state.", ctr_states, ctrs, 4);
        size_t images = 0;
        if (d->images)
                images = rm_image_list(d->images, NULL, a)->n_images;
        rm_metrics_family(out, "remora_images", "gauge", "Images in the image store.");
        rm_metrics_sample(out, "remora_images", NULL, (double)images);
        rm_arena_free(a);
}

/* The processes whose name is comm, by a walk of /proc: what is really there, not what
 * the records say, so a leaked monitor shows. */
static size_t count_processes(const char *comm)
{
        cleanup_dir DIR *proc = opendir("/proc");
        size_t n = 0;
        struct dirent *e;
        while (proc && (e = readdir(proc))) {
                if (e->d_name[0] < '1' || e->d_name[0] > '9')
                        continue;
                char path[300], name[32];
                snprintf(path, sizeof(path), "/proc/%s/comm", e->d_name);
                cleanup_close int fd = open(path, O_RDONLY | O_CLOEXEC);
                ssize_t len = fd >= 0 ? read(fd, name, sizeof(name) - 1) : -1;
                if (len <= 0)
                        continue;
                name[len] = '\0';
                name[strcspn(name, "\n")] = '\0';
                n += strcmp(name, comm) == 0;
        }
        return n;
}

static size_t count_dir(const char *path)
{
        cleanup_dir DIR *dir = opendir(path);
        size_t n = 0;
        struct dirent *e;
        while (dir && (e = readdir(dir)))
                n += e->d_name[0] != '.';
        return n;
}

static void write_process(struct rm_daemon *d, FILE *out)
{
        long page = sysconf(_SC_PAGESIZE);
        unsigned long size = 0, resident = 0;
        cleanup_file FILE *statm = fopen("/proc/self/statm", "re");
        if (statm && fscanf(statm, "%lu %lu", &size, &resident) != 2)
                resident = 0;
        rm_metrics_family(out, "remora_process_resident_memory_bytes", "gauge",
                          "remorad's resident memory.");
        rm_metrics_sample(out, "remora_process_resident_memory_bytes", NULL,
                          (double)resident * (double)page);
        rm_metrics_family(out, "remora_process_open_fds", "gauge",
                          "remorad's open file descriptors.");
        /* The directory stream's own fd is counted too: one less is what remorad holds. */
        size_t fds = count_dir("/proc/self/fd");
        rm_metrics_sample(out, "remora_process_open_fds", NULL, (double)(fds ? fds - 1 : 0));
        rm_metrics_family(out, "remora_process_threads", "gauge", "remorad's threads.");
        rm_metrics_sample(out, "remora_process_threads", NULL,
                          (double)count_dir("/proc/self/task"));
        rm_metrics_family(out, "remora_shim_processes", "gauge",
                          "remora-shim monitor processes running on the node (counted every "
                          "5 s).");
        long shims = d->metrics ? atomic_load(&d->metrics->shims) : -1;
        rm_metrics_sample(out, "remora_shim_processes", NULL,
                          (double)(shims >= 0 ? (size_t)shims : count_processes("remora-shim")));
        rm_metrics_family(out, "remora_start_time_seconds", "gauge",
                          "When remorad started, in seconds since the epoch.");
        rm_metrics_sample(out, "remora_start_time_seconds", NULL, (double)d->started);
        rm_metrics_family(out, "remora_startup_repairs", "gauge",
                          "What start-up found half done or left over and finished, undid or "
                          "removed, by part (the log names each one).");
        rm_metrics_sample(out, "remora_startup_repairs", "part=\"pods\"",
                          d->sandboxes ? (double)rm_sandbox_repairs(d->sandboxes) : 0);
        rm_metrics_sample(out, "remora_startup_repairs", "part=\"containers\"",
                          d->containers ? (double)rm_containers_repairs(d->containers) : 0);
        rm_metrics_family(out, "remora_startup_duration_seconds", "gauge",
                          "How long start-up took: loading records, reconciling, until serving.");
        rm_metrics_sample(out, "remora_startup_duration_seconds", NULL,
                          (double)d->counters.startup_ns / 1e9);
}

static void write_codes(FILE *out, const char *name, const char *label,
                        const atomic_uint_fast64_t *by_code)
{
        for (int c = 0; c < 17; c++) {
                uint64_t v = atomic_load_explicit(&by_code[c], memory_order_relaxed);
                if (v == 0)
                        continue;
                char labels[64];
                snprintf(labels, sizeof(labels), "%s=\"%s\"", label, rm_code_name((enum rm_code)c));
                rm_metrics_sample(out, name, labels, (double)v);
        }
}

static void write_images(struct rm_daemon *d, FILE *out)
{
        rm_metrics_family(out, "remora_image_pulls_total", "counter",
                          "PullImage calls answered, by result (gRPC status code).");
        write_codes(out, "remora_image_pulls_total", "result", d->counters.pulls);
        uint64_t bytes = 0, layers = 0;
        if (d->images)
                rm_image_service_counters(d->images, &bytes, &layers);
        rm_metrics_family(out, "remora_image_pull_bytes_total", "counter",
                          "Bytes of blobs (layers, configs) fetched from registries.");
        rm_metrics_sample(out, "remora_image_pull_bytes_total", NULL, (double)bytes);
        rm_metrics_family(out, "remora_image_layers_unpacked_total", "counter",
                          "Layers unpacked into the image store.");
        rm_metrics_sample(out, "remora_image_layers_unpacked_total", NULL, (double)layers);
        rm_metrics_family(out, "remora_image_pull_duration_seconds", "histogram",
                          "How long PullImage took, failed pulls included.");
        rm_metrics_histo(out, "remora_image_pull_duration_seconds", NULL,
                         &d->counters.pull_duration);
}

static void write_network(struct rm_daemon *d, FILE *out)
{
        struct rm_network_stats st = {0};
        if (d->network)
                rm_network_stats(d->network, &st);
        rm_metrics_family(out, "remora_ipam_addresses", "gauge",
                          "Pod addresses of the built-in bridge's subnets, in use or free.");
        rm_metrics_sample(out, "remora_ipam_addresses", "family=\"ipv4\",state=\"in_use\"",
                          st.ipv4_in_use);
        rm_metrics_sample(out, "remora_ipam_addresses", "family=\"ipv4\",state=\"free\"",
                          st.ipv4_free);
        rm_metrics_sample(out, "remora_ipam_addresses", "family=\"ipv6\",state=\"in_use\"",
                          st.ipv6_in_use);
        rm_metrics_sample(out, "remora_ipam_addresses", "family=\"ipv6\",state=\"free\"",
                          st.ipv6_free);
        rm_metrics_family(out, "remora_cni_plugin_failures_total", "counter",
                          "CNI plugin runs that failed (exit status, time-out, bad result), by "
                          "plugin type.");
        for (size_t i = 0; i < st.n_plugins; i++) {
                char esc[128], labels[160];
                snprintf(labels, sizeof(labels), "plugin=\"%s\"",
                         rm_metrics_label_escape(st.plugins[i].type, esc, sizeof(esc)));
                rm_metrics_sample(out, "remora_cni_plugin_failures_total", labels,
                                  (double)st.plugins[i].failures);
        }
        rm_metrics_family(out, "remora_pod_network_setup_duration_seconds", "histogram",
                          "Pod network setup (built-in bridge or CNI ADD), failed ones included.");
        rm_metrics_histo(out, "remora_pod_network_setup_duration_seconds", NULL,
                         &d->counters.net_setup);
        rm_metrics_family(out, "remora_pod_network_teardown_duration_seconds", "histogram",
                          "Pod network teardown (built-in bridge or CNI DEL).");
        rm_metrics_histo(out, "remora_pod_network_teardown_duration_seconds", NULL,
                         &d->counters.net_teardown);
}

static void write_front_end(struct rm_daemon *d, FILE *out)
{
        rm_metrics_family(out, "remora_cri_call_wait_seconds", "histogram",
                          "How long calls waited from their arrival to a thread starting them.");
        static const struct rm_histo none;
        rm_metrics_histo(out, "remora_cri_call_wait_seconds", NULL,
                         d->grpc ? rm_grpc_server_wait(d->grpc) : &none);
        struct rm_grpc_load l = {0};
        if (d->grpc)
                rm_grpc_server_load(d->grpc, &l);
        rm_metrics_family(out, "remora_call_pool_threads", "gauge",
                          "Threads of the elastic pool that runs blocking calls, by state.");
        rm_metrics_sample(out, "remora_call_pool_threads", "state=\"busy\"", (double)l.pool_busy);
        rm_metrics_sample(out, "remora_call_pool_threads", "state=\"idle\"",
                          (double)(l.pool_threads - l.pool_busy));
}

static void write_sessions(struct rm_daemon *d, FILE *out)
{
        size_t exec = 0, attach = 0, pf = 0;
        if (d->streaming)
                rm_streaming_sessions(d->streaming, &exec, &attach, &pf);
        int sync = d->dispatch
                       ? rm_dispatch_in_flight(d->dispatch, "/runtime.v1.RuntimeService/ExecSync")
                       : 0;
        rm_metrics_family(out, "remora_exec_sessions", "gauge",
                          "Commands being run in containers: ExecSync calls, and Exec sessions "
                          "on the streaming server.");
        rm_metrics_sample(out, "remora_exec_sessions", "kind=\"sync\"", sync);
        rm_metrics_sample(out, "remora_exec_sessions", "kind=\"stream\"", (double)exec);
        rm_metrics_family(out, "remora_streaming_sessions", "gauge",
                          "Upgraded streaming sessions, by kind.");
        rm_metrics_sample(out, "remora_streaming_sessions", "kind=\"exec\"", (double)exec);
        rm_metrics_sample(out, "remora_streaming_sessions", "kind=\"attach\"", (double)attach);
        rm_metrics_sample(out, "remora_streaming_sessions", "kind=\"portforward\"", (double)pf);
}

void rm_metrics_write(struct rm_daemon *d, FILE *out)
{
        if (d->dispatch)
                rm_dispatch_metrics_write(d->dispatch, out);
        write_objects(d, out);
        write_images(d, out);
        write_network(d, out);
        write_sessions(d, out);
        write_front_end(d, out);
        write_process(d, out);
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *conn, const char *url,
                                  const char *method, const char *version, const char *upload,
                                  size_t *upload_size, void **con_cls)
{
        (void)version;
        (void)upload;
        (void)upload_size;
        (void)con_cls;
        struct rm_metrics_server *m = cls;
        struct MHD_Response *r;
        unsigned status = MHD_HTTP_OK;
        if (strcmp(method, "GET") != 0 && strcmp(method, "HEAD") != 0) {
                static const char msg[] = "only GET\n";
                status = MHD_HTTP_METHOD_NOT_ALLOWED;
                r = MHD_create_response_from_buffer(sizeof(msg) - 1, (void *)msg,
                                                    MHD_RESPMEM_PERSISTENT);
        } else if (strcmp(url, "/metrics") != 0) {
                static const char msg[] = "remorad serves /metrics only\n";
                status = MHD_HTTP_NOT_FOUND;
                r = MHD_create_response_from_buffer(sizeof(msg) - 1, (void *)msg,
                                                    MHD_RESPMEM_PERSISTENT);
        } else {
                char *text = NULL;
                size_t len = 0;
                FILE *out = open_memstream(&text, &len);
                if (out == NULL)
                        return MHD_NO;
                rm_metrics_write(m->d, out);
                fclose(out);
                r = MHD_create_response_from_buffer(len, text, MHD_RESPMEM_MUST_FREE);
                MHD_add_response_header(r, "Content-Type",
                                        "text/plain; version=0.0.4; charset=utf-8");
        }
        if (r == NULL)
                return MHD_NO;
        enum MHD_Result ret = MHD_queue_response(conn, status, r);
        MHD_destroy_response(r);
        return ret;
}

/* A listening socket for address, or -1 with *err. */
static int listen_on(const char *address, struct rm_metrics_server *m, struct rm_error **err)
{
        struct sockaddr_storage ss = {0};
        socklen_t sl;
        if (strncmp(address, "unix://", 7) == 0) {
                const char *path = address + 7;
                struct sockaddr_un *un = (struct sockaddr_un *)&ss;
                if (path[0] != '/' || strlen(path) >= sizeof(un->sun_path))
                        return rm_error_set(err, RM_INVALID_ARGUMENT,
                                            "metrics.address: \"%s\" needs an absolute socket path "
                                            "under %zu bytes",
                                            address, sizeof(un->sun_path));
                un->sun_family = AF_UNIX;
                strcpy(un->sun_path, path);
                sl = sizeof(*un);
                struct stat st;
                if (lstat(path, &st) == 0 && S_ISSOCK(st.st_mode))
                        unlink(path); /* left by an earlier run: the state lock is ours */
        } else {
                char host[64];
                const char *colon = strrchr(address, ':');
                char *end = NULL;
                long port = colon ? strtol(colon + 1, &end, 10) : -1;
                size_t hl = colon ? (size_t)(colon - address) : 0;
                if (colon == NULL || end == NULL || *end || port < 1 || port > 65535 || hl == 0 ||
                    hl >= sizeof(host))
                        return rm_error_set(err, RM_INVALID_ARGUMENT,
                                            "metrics.address: \"%s\" is not unix:///path, "
                                            "HOST:PORT or [V6]:PORT",
                                            address);
                memcpy(host, address, hl);
                host[hl] = '\0';
                struct sockaddr_in *in4 = (struct sockaddr_in *)&ss;
                struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)&ss;
                if (host[0] == '[' && host[hl - 1] == ']') {
                        host[hl - 1] = '\0';
                        if (inet_pton(AF_INET6, host + 1, &in6->sin6_addr) != 1)
                                return rm_error_set(err, RM_INVALID_ARGUMENT,
                                                    "metrics.address: \"%s\": bad IPv6 address",
                                                    address);
                        in6->sin6_family = AF_INET6;
                        in6->sin6_port = htons((uint16_t)port);
                        sl = sizeof(*in6);
                } else {
                        if (inet_pton(AF_INET, strcmp(host, "localhost") == 0 ? "127.0.0.1" : host,
                                      &in4->sin_addr) != 1)
                                return rm_error_set(err, RM_INVALID_ARGUMENT,
                                                    "metrics.address: \"%s\": the host must be an "
                                                    "IP address or localhost",
                                                    address);
                        in4->sin_family = AF_INET;
                        in4->sin_port = htons((uint16_t)port);
                        sl = sizeof(*in4);
                }
        }
        cleanup_close int fd = socket(ss.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
        int one = 1;
        if (fd < 0)
                return rm_error_sys(err, "metrics: socket");
        if (ss.ss_family != AF_UNIX)
                setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
        if (bind(fd, (struct sockaddr *)&ss, sl) < 0 || listen(fd, 64) < 0)
                return rm_error_sys(err, "metrics: listen on %s", address);
        if (ss.ss_family == AF_UNIX) {
                m->unix_path = xstrdup(((struct sockaddr_un *)&ss)->sun_path);
                chmod(m->unix_path, 0660);
        }
        snprintf(m->address, sizeof(m->address), "%s", address);
        return steal_fd(&fd);
}

static void *count_shims(void *arg)
{
        struct rm_metrics_server *m = arg;
        pthread_mutex_lock(&m->lock);
        while (!m->stop) {
                pthread_mutex_unlock(&m->lock);
                atomic_store(&m->shims, (long)count_processes("remora-shim"));
                pthread_mutex_lock(&m->lock);
                struct timespec ts =
                    rm_mono_timespec(rm_mono_ns() + (SHIM_COUNT_MS / 1000) * 1000000000LL);
                while (!m->stop && pthread_cond_timedwait(&m->stop_cv, &m->lock, &ts) == 0)
                        ;
        }
        pthread_mutex_unlock(&m->lock);
        return NULL;
}

struct rm_metrics_server *rm_metrics_server_open(struct json_object *section, struct rm_daemon *d,
                                                 struct rm_error **err)
{
        static const char *const known[] = {"address", NULL};
        const char *address = NULL;
        if (rm_confsect_check_keys("metrics", section, known, err) < 0 ||
            rm_confsect_string("metrics", section, "address", &address, err) < 0)
                return NULL;
        if (address == NULL)
                return NULL;
        struct rm_metrics_server *m = xzalloc(sizeof(*m));
        m->d = d;
        atomic_init(&m->shims, -1);
        pthread_mutex_init(&m->lock, NULL);
        rm_cond_init_monotonic(&m->stop_cv);
        m->counting = pthread_create(&m->counter, NULL, count_shims, m) == 0;
        int fd = listen_on(address, m, err);
        if (fd < 0) {
                rm_metrics_server_close(m);
                return NULL;
        }
        /* One thread, serving scrapes one after another: a scrape is quick, and a slow
         * client is cut off after 10 s. */
        m->mhd = MHD_start_daemon(MHD_USE_INTERNAL_POLLING_THREAD, 0, NULL, NULL, on_request, m,
                                  MHD_OPTION_LISTEN_SOCKET, fd, MHD_OPTION_CONNECTION_TIMEOUT,
                                  (unsigned int)10, MHD_OPTION_CONNECTION_LIMIT, (unsigned int)64,
                                  MHD_OPTION_END);
        if (m->mhd == NULL) {
                close(fd);
                rm_error_set(err, RM_INTERNAL, "metrics: cannot start the HTTP server on %s",
                             address);
                rm_metrics_server_close(m);
                return NULL;
        }
        rm_log_info("metrics served at %s/metrics", address);
        return m;
}

void rm_metrics_server_close(struct rm_metrics_server *m)
{
        if (m == NULL)
                return;
        if (m->mhd)
                MHD_stop_daemon(m->mhd);
        if (m->counting) {
                pthread_mutex_lock(&m->lock);
                m->stop = true;
                pthread_cond_signal(&m->stop_cv);
                pthread_mutex_unlock(&m->lock);
                pthread_join(m->counter, NULL);
        }
        pthread_cond_destroy(&m->stop_cv);
        pthread_mutex_destroy(&m->lock);
        if (m->unix_path) {
                unlink(m->unix_path);
                free(m->unix_path);
        }
        free(m);
}

const char *rm_metrics_server_address(const struct rm_metrics_server *m)
{
        return m ? m->address : "";
}
