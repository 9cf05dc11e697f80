#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "remora/cleanup.h"
#include "remora/server.h"
#include "version.h"

static void usage(FILE *out)
{
        fprintf(
            out,
            "Usage: remorad [OPTION]...\n"
            "Remora: a Kubernetes CRI v1 container runtime (RuntimeService and "
            "ImageService over gRPC).\n"
            "\n"
            "  --config FILE        JSON config file (default " RM_DEFAULT_CONFIG_PATH
            ", used if present)\n"
            "  --listen ADDR        gRPC address, unix:///path (default "
            "unix://<state>/remora.sock)\n"
            "  --root DIR           persistent state (default " RM_DEFAULT_ROOT ")\n"
            "  --state DIR          runtime state: socket, lock, runc root "
            "(default " RM_DEFAULT_STATE ")\n"
            "  --log-level LEVEL    error, warn, info or debug (default info)\n"
            "  --workers N          threads polling gRPC completion queues, 1-%d (default %d)\n"
            "  --runtime-path PATH  OCI runtime binary, a name in $PATH or a path "
            "(default " RM_DEFAULT_RUNTIME ")\n"
            "  --print-config       print the effective config as JSON and exit\n"
            "  --check              check the host (runtime, cgroups, filesystems, network,\n"
            "                       directories, socket) without starting; exit 1 on a FAIL\n"
            "  --help               this text\n"
            "  --version            the version\n"
            "\n"
            "Flags override the config file; the config file overrides the built-in defaults.\n",
            RM_MAX_WORKERS, RM_DEFAULT_WORKERS);
}

enum {
        OPT_CONFIG = 256,
        OPT_LISTEN,
        OPT_ROOT,
        OPT_STATE,
        OPT_LOG_LEVEL,
        OPT_WORKERS,
        OPT_RUNTIME_PATH,
        OPT_PRINT_CONFIG,
        OPT_CHECK,
        OPT_HELP,
        OPT_VERSION,
};

/* Map a flag to its config key, so flags go through the same validation as the file. */
static const char *flag_key(int opt)
{
        switch (opt) {
        case OPT_LISTEN:
                return "listen";
        case OPT_ROOT:
                return "root";
        case OPT_STATE:
                return "state";
        case OPT_LOG_LEVEL:
                return "log_level";
        case OPT_RUNTIME_PATH:
                return "runtime_path";
        default:
                return NULL;
        }
}

enum rm_cli_action rm_cli_parse(struct rm_config *cfg, int argc, char **argv)
{
        static const struct option opts[] = {
            {"config", required_argument, NULL, OPT_CONFIG},
            {"listen", required_argument, NULL, OPT_LISTEN},
            {"root", required_argument, NULL, OPT_ROOT},
            {"state", required_argument, NULL, OPT_STATE},
            {"log-level", required_argument, NULL, OPT_LOG_LEVEL},
            {"workers", required_argument, NULL, OPT_WORKERS},
            {"runtime-path", required_argument, NULL, OPT_RUNTIME_PATH},
            {"print-config", no_argument, NULL, OPT_PRINT_CONFIG},
            {"check", no_argument, NULL, OPT_CHECK},
            {"help", no_argument, NULL, OPT_HELP},
            {"version", no_argument, NULL, OPT_VERSION},
            {NULL, 0, NULL, 0},
        };

        cleanup_json struct json_object *flags = json_object_new_object();
        const char *config_file = NULL;
        bool print_config = false, check = false;
        int opt;
        optind = 1;
        while ((opt = getopt_long(argc, argv, "", opts, NULL)) != -1) {
                switch (opt) {
                case OPT_CONFIG:
                        config_file = optarg;
                        break;
                case OPT_WORKERS: {
                        char *end = NULL;
                        long n = strtol(optarg, &end, 10);
                        if (*optarg == '\0' || *end != '\0') {
                                fprintf(stderr, "remorad: --workers takes a number, got \"%s\"\n",
                                        optarg);
                                return RM_CLI_EXIT_USAGE;
                        }
                        json_object_object_add(flags, "workers", json_object_new_int64(n));
                        break;
                }
                case OPT_PRINT_CONFIG:
                        print_config = true;
                        break;
                case OPT_CHECK:
                        check = true;
                        break;
                case OPT_HELP:
                        usage(stdout);
                        return RM_CLI_EXIT_OK;
                case OPT_VERSION:
                        printf("remorad %s (commit %s), CRI API v1\n", REMORA_VERSION,
                               REMORA_GIT_COMMIT);
                        return RM_CLI_EXIT_OK;
                default:
                        if (flag_key(opt)) {
                                json_object_object_add(flags, flag_key(opt),
                                                       json_object_new_string(optarg));
                                break;
                        }
                        usage(stderr);
                        return RM_CLI_EXIT_USAGE;
                }
        }
        if (optind < argc) {
                fprintf(stderr, "remorad: unexpected argument \"%s\"\n", argv[optind]);
                return RM_CLI_EXIT_USAGE;
        }

        cleanup_error struct rm_error *err = NULL;
        bool required = config_file != NULL;
        if (rm_config_load_file(cfg, required ? config_file : RM_DEFAULT_CONFIG_PATH, required,
                                &err) < 0 ||
            (rm_config_apply_json(cfg, flags, &err) < 0 && rm_error_wrap(&err, "command line")) ||
            rm_config_finish(cfg, &err) < 0) {
                if (check) {
                        printf("%-5s %-20s %s: fix the config file or the flag\n", "FAIL", "config",
                               err->msg);
                        printf("1 failed, 0 warnings (nothing else checked)\n");
                        return RM_CLI_EXIT_FAIL;
                }
                fprintf(stderr, "remorad: %s\n", err->msg);
                return RM_CLI_EXIT_USAGE;
        }
        if (print_config) {
                cleanup_json struct json_object *o = rm_config_to_json(cfg);
                printf("%s\n", json_object_to_json_string_ext(
                                   o, JSON_C_TO_STRING_PRETTY | JSON_C_TO_STRING_NOSLASHESCAPE));
                return RM_CLI_EXIT_OK;
        }
        return check ? RM_CLI_CHECK : RM_CLI_RUN;
}
