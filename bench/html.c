/* The report as one self-contained HTML page, drawn from the same JSON document that
 * --json writes (so a saved run can be drawn again with --from-json): the machine, the
 * runtimes, one inline-SVG bar chart per scenario, and the full table. No scripts, no
 * fonts or styles from elsewhere: it opens the same offline as online. */
#include <json-c/json.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "bench.h"
#include "remora/cleanup.h"

/* Two endpoints at most: A in blue, B in orange; p95 as a lighter bar behind p50. */
static const char *const color_p50[] = {"#2b6cb0", "#c05621"};
static const char *const color_p95[] = {"#a3c4e8", "#f0b98f"};

#define LABEL_W 270
#define BAR_W   460
#define TEXT_W  250
#define BAR_H   13
#define ROW_GAP 10

static void put_escaped(FILE *out, const char *s)
{
        for (; s && *s; s++) {
                switch (*s) {
                case '<':
                        fputs("&lt;", out);
                        break;
                case '>':
                        fputs("&gt;", out);
                        break;
                case '&':
                        fputs("&amp;", out);
                        break;
                case '"':
                        fputs("&quot;", out);
                        break;
                default:
                        fputc(*s, out);
                }
        }
}

static const char *str_of(struct json_object *o, const char *key)
{
        struct json_object *v = NULL;
        return json_object_object_get_ex(o, key, &v) && v ? json_object_get_string(v) : NULL;
}

/* A number from a result: false when the key is absent. */
static bool num_of(struct json_object *o, const char *key, double *out)
{
        struct json_object *v = NULL;
        if (!json_object_object_get_ex(o, key, &v) || v == NULL)
                return false;
        *out = json_object_get_double(v);
        return true;
}

/* The scenario a figure belongs to; runs saved before figures carried one are grouped
 * by unit instead. */
static const char *group_of(struct json_object *fig)
{
        const char *s = str_of(fig, "scenario");
        return s ? s : str_of(fig, "unit");
}

static struct json_object *array_of(struct json_object *o, const char *key)
{
        struct json_object *v = NULL;
        return json_object_object_get_ex(o, key, &v) && json_object_is_type(v, json_type_array)
                   ? v
                   : NULL;
}

/* The largest number drawn in a figure's row: its own scale, so a 0.2 ms call and a
 * 100 ms one each fill their row. */
static double row_max(struct json_object *results)
{
        double max = 0, v;
        for (size_t e = 0; e < json_object_array_length(results); e++) {
                struct json_object *r = json_object_array_get_idx(results, e);
                if ((num_of(r, "p95", &v) || num_of(r, "value", &v)) && v > max)
                        max = v;
        }
        return max;
}

static void chart(FILE *out, struct json_object *figs, const char *group, size_t nep)
{
        size_t rows = 0;
        for (size_t i = 0; i < json_object_array_length(figs); i++)
                if (strcmp(group_of(json_object_array_get_idx(figs, i)), group) == 0)
                        rows++;
        int row_h = (int)nep * (BAR_H + 2) + ROW_GAP;
        int h = (int)rows * row_h + 8;
        fprintf(out,
                "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%d\" height=\"%d\" "
                "role=\"img\" font-family=\"sans-serif\" font-size=\"12\">\n",
                LABEL_W + BAR_W + TEXT_W, h);
        int y = 4;
        for (size_t i = 0; i < json_object_array_length(figs); i++) {
                struct json_object *fig = json_object_array_get_idx(figs, i);
                if (strcmp(group_of(fig), group) != 0)
                        continue;
                struct json_object *results = array_of(fig, "results");
                const char *unit = str_of(fig, "unit");
                fprintf(out, "<text x=\"0\" y=\"%d\">", y + (int)nep * (BAR_H + 2) / 2 + 4);
                put_escaped(out, str_of(fig, "name"));
                fputs("</text>\n", out);
                double max = results ? row_max(results) : 0;
                for (size_t e = 0; results && e < json_object_array_length(results) && e < 2; e++) {
                        struct json_object *r = json_object_array_get_idx(results, e);
                        int by = y + (int)e * (BAR_H + 2);
                        double p50, p95, value;
                        char text[96];
                        if (num_of(r, "p50", &p50) && num_of(r, "p95", &p95)) {
                                int w95 = max > 0 ? (int)lround(BAR_W * p95 / max) : 0;
                                int w50 = max > 0 ? (int)lround(BAR_W * p50 / max) : 0;
                                fprintf(out,
                                        "<rect x=\"%d\" y=\"%d\" width=\"%d\" height=\"%d\" "
                                        "fill=\"%s\"/><rect x=\"%d\" y=\"%d\" width=\"%d\" "
                                        "height=\"%d\" fill=\"%s\"/>\n",
                                        LABEL_W, by, w95 > 1 ? w95 : 1, BAR_H, color_p95[e],
                                        LABEL_W, by, w50 > 1 ? w50 : 1, BAR_H, color_p50[e]);
                                snprintf(text, sizeof(text), "%s p50 %.3g / p95 %.3g %s",
                                         str_of(r, "endpoint"), p50, p95, unit ? unit : "");
                        } else if (num_of(r, "value", &value)) {
                                int w = max > 0 ? (int)lround(BAR_W * value / max) : 0;
                                fprintf(out,
                                        "<rect x=\"%d\" y=\"%d\" width=\"%d\" height=\"%d\" "
                                        "fill=\"%s\"/>\n",
                                        LABEL_W, by, w > 1 ? w : 1, BAR_H, color_p50[e]);
                                snprintf(text, sizeof(text), "%s %.4g %s", str_of(r, "endpoint"),
                                         value, unit ? unit : "");
                        } else {
                                snprintf(text, sizeof(text), "%s %s", str_of(r, "endpoint"),
                                         str_of(r, "state") ? str_of(r, "state") : "not run");
                        }
                        fprintf(out, "<text x=\"%d\" y=\"%d\" fill=\"#333\">", LABEL_W + BAR_W + 6,
                                by + BAR_H - 2);
                        put_escaped(out, text);
                        fputs("</text>\n", out);
                }
                y += row_h;
        }
        fputs("</svg>\n", out);
}

static void table(FILE *out, struct json_object *figs, struct json_object *eps)
{
        fputs("<table>\n<tr><th>figure</th><th>unit</th>", out);
        for (size_t e = 0; e < json_object_array_length(eps); e++) {
                fputs("<th>", out);
                put_escaped(out, str_of(json_object_array_get_idx(eps, e), "label"));
                fputs(" p50 / p95 / max</th>", out);
        }
        if (json_object_array_length(eps) == 2)
                fputs("<th>A/B p50</th>", out);
        fputs("</tr>\n", out);
        for (size_t i = 0; i < json_object_array_length(figs); i++) {
                struct json_object *fig = json_object_array_get_idx(figs, i);
                fputs("<tr><td>", out);
                put_escaped(out, str_of(fig, "name"));
                fputs("</td><td>", out);
                put_escaped(out, str_of(fig, "unit"));
                fputs("</td>", out);
                struct json_object *results = array_of(fig, "results");
                for (size_t e = 0; results && e < json_object_array_length(results); e++) {
                        struct json_object *r = json_object_array_get_idx(results, e);
                        double p50, p95, max, value;
                        if (num_of(r, "p50", &p50) && num_of(r, "p95", &p95) &&
                            num_of(r, "max", &max))
                                fprintf(out, "<td class=\"n\">%.3f / %.3f / %.3f</td>", p50, p95,
                                        max);
                        else if (num_of(r, "value", &value))
                                fprintf(out, "<td class=\"n\">%.3f</td>", value);
                        else {
                                fputs("<td>", out);
                                put_escaped(out, str_of(r, "state"));
                                fputs("</td>", out);
                        }
                }
                double ratio;
                if (json_object_array_length(eps) == 2) {
                        /* A rate (pods/s, MB/s) is better higher; the rest lower. */
                        const char *unit = str_of(fig, "unit");
                        bool rate = unit && strstr(unit, "/s") != NULL;
                        if (num_of(fig, "ratio_p50", &ratio))
                                fprintf(out, "<td class=\"n %s\">%.2f</td>",
                                        (rate ? ratio >= 1.0 : ratio <= 1.0) ? "good" : "bad",
                                        ratio);
                        else
                                fputs("<td></td>", out);
                }
                fputs("</tr>\n", out);
        }
        fputs("</table>\n", out);
}

static void header(FILE *out, struct json_object *doc, struct json_object *eps)
{
        struct json_object *m = NULL, *o = NULL;
        json_object_object_get_ex(doc, "machine", &m);
        json_object_object_get_ex(doc, "options", &o);
        fputs("<h1>remora-bench ", out);
        put_escaped(out, str_of(doc, "run_id"));
        fputs("</h1>\n<p>Machine: ", out);
        put_escaped(out, m ? str_of(m, "os") : "?");
        fputs(", kernel ", out);
        put_escaped(out, m ? str_of(m, "kernel") : "?");
        fputs(" ", out);
        put_escaped(out, m ? str_of(m, "arch") : "");
        fputs(", ", out);
        put_escaped(out, m ? str_of(m, "nproc") : "?");
        fputs(" CPUs. Options: n=", out);
        put_escaped(out, o ? str_of(o, "n") : "?");
        fputs(", warm-up ", out);
        put_escaped(out, o ? str_of(o, "warmup") : "?");
        fputs(", image ", out);
        put_escaped(out, o ? str_of(o, "image") : "?");
        fputs(".</p>\n<ul class=\"eps\">\n", out);
        for (size_t e = 0; e < json_object_array_length(eps) && e < 2; e++) {
                struct json_object *ep = json_object_array_get_idx(eps, e);
                fprintf(out, "<li><span class=\"sw\" style=\"background:%s\"></span><b>",
                        color_p50[e]);
                put_escaped(out, str_of(ep, "label"));
                fputs("</b> ", out);
                put_escaped(out, str_of(ep, "runtime"));
                fputs(" <code>", out);
                put_escaped(out, str_of(ep, "endpoint"));
                fputs("</code></li>\n", out);
        }
        fputs("</ul>\n<p>Each row has its own scale. Latency bars: p50 dark, p95 light behind "
              "it; lower is better. Value figures (memory, throughput) show the value.</p>\n",
              out);
}

int report_html_doc(struct json_object *doc, const char *path)
{
        struct json_object *figs = array_of(doc, "figures"), *eps = array_of(doc, "endpoints");
        if (figs == NULL || eps == NULL) {
                fprintf(stderr, "remora-bench: %s: not a remora-bench report\n", path);
                return -1;
        }
        cleanup_file FILE *out = fopen(path, "we");
        if (out == NULL) {
                fprintf(stderr, "remora-bench: cannot write %s: %m\n", path);
                return -1;
        }
        fputs("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\n"
              "<title>remora-bench report</title>\n<style>\n"
              "body{font-family:sans-serif;margin:24px;color:#222;max-width:1000px}\n"
              "h2{font-size:16px;margin:22px 0 6px;border-bottom:1px solid #ddd}\n"
              "table{border-collapse:collapse;font-size:12px;margin-top:16px}\n"
              "td,th{border:1px solid #ccc;padding:3px 6px;text-align:left}\n"
              "td.n{text-align:right;font-variant-numeric:tabular-nums}\n"
              ".good{color:#276749}.bad{color:#9b2c2c}\n"
              ".eps{list-style:none;padding:0}.sw{display:inline-block;width:12px;height:12px;"
              "margin-right:6px}\n</style></head><body>\n",
              out);
        header(out, doc, eps);
        /* One chart per group, groups in first-seen order. */
        size_t n = json_object_array_length(figs);
        for (size_t i = 0; i < n; i++) {
                const char *g = group_of(json_object_array_get_idx(figs, i));
                bool seen = false;
                for (size_t j = 0; j < i && !seen; j++)
                        seen = strcmp(group_of(json_object_array_get_idx(figs, j)), g) == 0;
                if (seen)
                        continue;
                fputs("<h2>", out);
                put_escaped(out, g);
                fputs("</h2>\n", out);
                chart(out, figs, g, json_object_array_length(eps));
        }
        table(out, figs, eps);
        fputs("</body></html>\n", out);
        if (fflush(out) != 0 || ferror(out)) {
                fprintf(stderr, "remora-bench: writing %s failed\n", path);
                return -1;
        }
        return 0;
}
