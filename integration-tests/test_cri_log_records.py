"""The CRI log records remora-shim writes, as kubelet reads them: F ends a line the
program wrote, P is a piece that continues (kubelet appends a newline to F records only).

The attacks on the old writer: a program whose last output has no newline got an F record
(`kubectl logs` showed a newline it never wrote), and a line of exactly 16,384 bytes whose
newline came in a later read became a P record of 16,384 bytes plus an empty F record, so
the records depended on how the pipe reads happened to be cut. containerd writes P for the
first and one F for the second; so does Remora now.
"""
from ctr_helpers import container_config, create, image_ref, pod, wait_exited  # noqa: F401

LIMIT = 16384


def records(path):
    out = []
    with open(path) as f:
        for line in f:
            assert line.endswith("\n"), line
            ts, stream, tag, text = line[:-1].split(" ", 3)
            out.append((stream, tag, text))
    return out


def run_to_exit(cri, pod, image_ref, name, script):
    cid = create(cri, pod, container_config(cri, image_ref, name, ["/bin/sh", "-c", script]))
    cri.call("StartContainer", container_id=cid)
    st = wait_exited(cri, cid, timeout=20)
    assert st.exit_code == 0
    recs = records(st.log_path)
    cri.call("RemoveContainer", container_id=cid)
    return recs


def test_final_output_without_newline_is_a_partial_record(cri, pod, image_ref):
    recs = run_to_exit(cri, pod, image_ref, "nonl", "echo first; printf abcd >&2; printf %s efgh")
    assert ("stdout", "F", "first") in recs
    assert ("stdout", "P", "efgh") in recs
    assert ("stderr", "P", "abcd") in recs
    assert len(recs) == 3, recs


def test_line_of_the_limit_split_across_reads_is_one_full_record(cri, pod, image_ref):
    # Each line is written in two pieces with a pause between, so the shim reads them
    # separately: first all 16,384 bytes and the newline alone, then 10,000 bytes and the
    # rest with the newline.
    script = ("head -c %d /dev/zero | tr '\\0' x; sleep 1; printf '\\n'; "
              "head -c 10000 /dev/zero | tr '\\0' y; sleep 1; "
              "head -c %d /dev/zero | tr '\\0' y; printf '\\n'; "
              "head -c %d /dev/zero | tr '\\0' z; sleep 1; printf 'z\\n'; echo end"
              % (LIMIT, LIMIT - 10000, LIMIT))
    recs = run_to_exit(cri, pod, image_ref, "limit", script)
    assert [(s, t, len(x)) for s, t, x in recs] == [
        ("stdout", "F", LIMIT), ("stdout", "F", LIMIT),
        ("stdout", "P", LIMIT), ("stdout", "F", 1), ("stdout", "F", 3)], \
        [(s, t, len(x)) for s, t, x in recs]
    assert recs[0][2] == "x" * LIMIT and recs[1][2] == "y" * LIMIT
    assert recs[2][2] == "z" * LIMIT and recs[3][2] == "z" and recs[4][2] == "end"
