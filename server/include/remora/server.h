/* remorad: configuration, the daemon's lifetime and the CRI gRPC front end. */
#ifndef REMORA_SERVER_H
#define REMORA_SERVER_H

#include <stdbool.h>
#include <stdio.h>
#include <json-c/json.h>

#include "remora/error.h"
#include "remora/log.h"

#define RM_DEFAULT_CONFIG_PATH  "/etc/remora/config.json"
#define RM_DEFAULT_ROOT         "/var/lib/remora"
#define RM_DEFAULT_STATE        "/run/remora"
#define RM_DEFAULT_RUNTIME      "runc"
#define RM_DEFAULT_WORKERS      1
#define RM_DEFAULT_POLL_SPIN_US 50
#define RM_MAX_POLL_SPIN_US     1000
#define RM_MAX_WORKERS          256
#define RM_MAX_MESSAGE_BYTES    (16 * 1024 * 1024)

#define RM_CONFIG_SECTIONS 6

/* Effective configuration: built-in defaults, then the config file, then flags. */
struct rm_config {
        char *listen; /* "unix:///abs/path"; NULL means unix://<state>/remora.sock */
        char *root;
        char *state;
        enum rm_log_level log_level;
        int workers;
        int poll_spin_us; /* a poller polls this long without sleeping after a completion */
        char *runtime_path;
        char *config_path; /* the file the config came from, NULL when none */
        /* Sections owned by a module ("image", "sandbox", "network", "streaming",
         * "metrics", "runtimes"), kept as
         * given (NULL when absent) and validated by that module when the daemon starts, so
         * each module names its own keys in errors and documents its own defaults. */
        struct json_object *sections[RM_CONFIG_SECTIONS];
};

/* Index of a module-owned section in struct rm_config.sections. */
enum rm_config_section {
        RM_SECTION_IMAGE,
        RM_SECTION_SANDBOX,
        RM_SECTION_NETWORK,
        RM_SECTION_STREAMING,
        RM_SECTION_METRICS,
        RM_SECTION_RUNTIMES,
};

/* The key of a module-owned section ("image", ...). */
const char *rm_config_section_name(enum rm_config_section s);

void rm_config_init(struct rm_config *cfg);
void rm_config_release(struct rm_config *cfg);

/* Apply a parsed config document over cfg. Unknown keys and values of the wrong type or
 * range are INVALID_ARGUMENT naming the key; cfg is left unchanged on error. */
int rm_config_apply_json(struct rm_config *cfg, struct json_object *doc, struct rm_error **err);

/* Read and apply a config file. When required is false a missing file is not an error. */
int rm_config_load_file(struct rm_config *cfg, const char *path, bool required,
                        struct rm_error **err);

/* Fill in derived values (the default listen address) and check the whole config. */
int rm_config_finish(struct rm_config *cfg, struct rm_error **err);

/* The socket path of a "unix://" or "unix:" listen address, NULL (and *err) otherwise. */
char *rm_config_socket_path(const char *listen, struct rm_error **err);

/* The effective config as a JSON object, for Status(verbose) and --print-config. */
struct json_object *rm_config_to_json(const struct rm_config *cfg);

/* Outcome of command-line parsing. */
enum rm_cli_action {
        RM_CLI_RUN,
        RM_CLI_CHECK, /* --check: run rm_check_host instead of the daemon */
        RM_CLI_EXIT_OK,
        RM_CLI_EXIT_USAGE,
        RM_CLI_EXIT_FAIL, /* --check with a config that does not load (already reported) */
};

/* Parse remorad's command line into cfg: loads the config file (from --config or the
 * default path) and applies flags over it. Prints --help / --version / errors itself. */
enum rm_cli_action rm_cli_parse(struct rm_config *cfg, int argc, char **argv);

/* `remorad --check`: check the host for what cfg needs without starting the daemon or
 * changing anything; one OK / WARN / FAIL line per check on out. Returns the number of
 * FAILs. */
int rm_check_host(const struct rm_config *cfg, FILE *out);

struct rm_daemon;

/* Bring the daemon up: directories, the state lock (refusing a second daemon on the same
 * state directory), the meta store, the managers and the listening socket. */
struct rm_daemon *rm_daemon_start(struct rm_config *cfg, struct rm_error **err);

/* Stop accepting calls, let in-flight calls finish, remove the socket, release all. */
void rm_daemon_stop(struct rm_daemon *d);

#endif
