/* The streaming server over the fake backend, for the integration tests. argv[1] is the
 * "streaming" config section as JSON. It prints its address, then reads one request per
 * line on stdin ({"kind": "exec"|"attach"|"portforward", ...CRI fields}) and prints the URL
 * or "error: <message>". EOF on stdin closes the server and exits. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <json-c/json.h>
#include "fake_backend.h"
#include "remora/log.h"

static bool get_bool(struct json_object *j, const char *k)
{
        struct json_object *v;
        return json_object_object_get_ex(j, k, &v) && json_object_get_boolean(v);
}

static const char *get_str(struct json_object *j, const char *k)
{
        struct json_object *v;
        return json_object_object_get_ex(j, k, &v) ? json_object_get_string(v) : "";
}

static int one(struct rm_streaming *srv, struct json_object *j, char **url, struct rm_error **err)
{
        const char *kind = get_str(j, "kind");
        struct json_object *arr;
        if (strcmp(kind, "exec") == 0) {
                Runtime__V1__ExecRequest r = RUNTIME__V1__EXEC_REQUEST__INIT;
                r.container_id = (char *)get_str(j, "container_id");
                char *cmd[64];
                if (json_object_object_get_ex(j, "cmd", &arr))
                        for (size_t i = 0; i < json_object_array_length(arr) && i < 64; i++)
                                cmd[r.n_cmd++] = (char *)json_object_get_string(
                                    json_object_array_get_idx(arr, i));
                r.cmd = cmd;
                r.tty = get_bool(j, "tty");
                r.stdin = get_bool(j, "stdin");
                r.stdout = get_bool(j, "stdout");
                r.stderr = get_bool(j, "stderr");
                return rm_streaming_exec_url(srv, &r, url, err);
        }
        if (strcmp(kind, "attach") == 0) {
                Runtime__V1__AttachRequest r = RUNTIME__V1__ATTACH_REQUEST__INIT;
                r.container_id = (char *)get_str(j, "container_id");
                r.tty = get_bool(j, "tty");
                r.stdin = get_bool(j, "stdin");
                r.stdout = get_bool(j, "stdout");
                r.stderr = get_bool(j, "stderr");
                return rm_streaming_attach_url(srv, &r, url, err);
        }
        Runtime__V1__PortForwardRequest r = RUNTIME__V1__PORT_FORWARD_REQUEST__INIT;
        r.pod_sandbox_id = (char *)get_str(j, "pod_sandbox_id");
        int32_t ports[64];
        if (json_object_object_get_ex(j, "port", &arr))
                for (size_t i = 0; i < json_object_array_length(arr) && i < 64; i++)
                        ports[r.n_port++] = json_object_get_int(json_object_array_get_idx(arr, i));
        r.port = ports;
        return rm_streaming_portforward_url(srv, &r, url, err);
}

int main(int argc, char **argv)
{
        rm_log_set_level(RM_LOG_DEBUG);
        struct json_object *section = argc > 1 ? json_tokener_parse(argv[1]) : NULL;
        struct rm_error *err = NULL;
        struct rm_streaming *srv = rm_streaming_open(section, &rm_fake_stream_ops, NULL, &err);
        if (srv == NULL) {
                printf("error: %s\n", err->msg);
                return 1;
        }
        printf("%s\n", rm_streaming_address(srv));
        fflush(stdout);
        char line[8192];
        while (fgets(line, sizeof(line), stdin)) {
                struct json_object *j = json_tokener_parse(line);
                char *url = NULL;
                if (j == NULL) {
                        printf("error: bad JSON\n");
                } else if (one(srv, j, &url, &err) < 0) {
                        printf("error: %s\n", err->msg);
                        rm_error_free(err);
                        err = NULL;
                } else {
                        printf("%s\n", url);
                }
                free(url);
                json_object_put(j);
                fflush(stdout);
        }
        rm_streaming_close(srv);
        json_object_put(section);
        return 0;
}
