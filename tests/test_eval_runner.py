import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from eval_fixtures import FakeAnswerer, make_hrbench, make_vstar

from focus_modules.eval import load_dataset, read_rows, run_eval
from focus_modules.eval.results import ResultsLockedError, appender, exclusive, shard_path

WORKER = Path(__file__).with_name("eval_worker.py")
SUMMARY_KEYS = {
    "dataset",
    "method",
    "n",
    "accuracy",
    "accuracy_lenient",
    "per_category",
    "fp_search_mean",
    "seconds_mean",
    "errors",
    "config",
}
ROW_KEYS = {
    "id",
    "category",
    "prompt",
    "answer",
    "correct",
    "correct_lenient",
    "targets",
    "rois",
    "forward_passes",
    "seconds",
    "error",
}


def _ids(rows):
    return [r["id"] for r in rows]


def test_run_writes_rows_error_rows_and_summary(tmp_path):
    questions = load_dataset("vstar", make_vstar(tmp_path / "vstar"), categories="all")
    out = tmp_path / "res.jsonl"
    summary = run_eval(
        questions, FakeAnswerer(), out, dataset="vstar", config={"n_steps": 2}, progress=False, info={"model": "fake"}
    )
    rows = read_rows(out)
    assert _ids(rows) == [q.id for q in questions]
    for row, q in zip(rows, questions):
        assert ROW_KEYS <= set(row)
        assert row["prompt"].startswith(q.question) and f"(A) {q.options[0]}" in row["prompt"]
        if row["error"] is None:
            longest = max(range(len(q.options)), key=lambda i: (len(q.options[i]), -i))
            assert row["answer"] == "ABCD"[longest]
            assert row["correct"] == (row["answer"] == q.label) == row["correct_lenient"]
            assert row["forward_passes"] == {"targets": 1, "relevance": 1, "verify": 2, "answer": 1}
            assert row["fp_search"] == 3 and row["seconds"] >= 0
            assert len(row["rois"]) == 1 and row["rois"][0][0]["confidence"] == 0.8
    bad = rows[1]
    assert bad["error"] and "sa_10.jpg" in bad["error"] and bad["correct"] is False and bad["answer"] is None
    on_disk = json.loads((tmp_path / "res.summary.json").read_text())
    assert on_disk == summary
    assert SUMMARY_KEYS <= set(summary)
    assert summary["n"] == summary["n_questions"] == 4 and summary["complete"] and summary["errors"] == 1
    assert summary["accuracy"] == pytest.approx(100 * sum(r["correct"] for r in rows) / 4)
    assert summary["config"] == {"n_steps": 2} and summary["run"]["model"] == "fake"
    assert set(summary["per_category"]) == {"attribute", "spatial", "counting"}
    assert summary["fp_search_mean"] == 3.0
    assert summary["roi_recall"] is not None


def test_resume_skips_answered_questions_and_limit(tmp_path):
    questions = load_dataset("hrbench", make_hrbench(tmp_path / "hr.tsv"))
    out = tmp_path / "res.jsonl"
    first = FakeAnswerer()
    partial = run_eval(questions[:2], first, out, dataset="hrbench", progress=False, summary=tmp_path / "s.json")
    assert partial["n"] == 2 and partial["complete"]
    second = FakeAnswerer()
    full = run_eval(questions, second, out, dataset="hrbench", batch_size=2, progress=False)
    # only the 2 of the 3 remaining decodable questions reach the model, in batches of at most 2
    assert [len(c) for c in second.calls] == [2]
    assert sum(len(c) for c in first.calls) == 2
    assert _ids(read_rows(out)) == ["10", "11", "20", "21", "30"]
    assert full["n"] == 5 and full["errors"] == 1
    # a summary of a shorter run covers only its own questions
    again = run_eval(questions[:3], FakeAnswerer(), out, dataset="hrbench", progress=False)
    assert again["n"] == 3


def test_torn_last_line_is_dropped_and_answered_again(tmp_path):
    questions = load_dataset("hrbench", make_hrbench(tmp_path / "hr.tsv"))
    out = tmp_path / "res.jsonl"
    run_eval(questions[:3], FakeAnswerer(), out, dataset="hrbench", progress=False)
    text = out.read_bytes()
    out.write_bytes(text[: len(text) - 40])  # kill -9 in the middle of writing the third row
    assert _ids(read_rows(out)) == ["10", "11"]
    run_eval(questions, FakeAnswerer(), out, dataset="hrbench", progress=False)
    assert _ids(read_rows(out)) == ["10", "11", "20", "21", "30"]
    assert all(line.startswith(b"{") for line in out.read_bytes().splitlines())


def test_damaged_middle_line_and_other_runs_are_refused(tmp_path):
    questions = load_dataset("hrbench", make_hrbench(tmp_path / "hr.tsv"))
    out = tmp_path / "res.jsonl"
    run_eval(questions[:2], FakeAnswerer(), out, dataset="hrbench", progress=False)
    with pytest.raises(ValueError, match="another run"):
        run_eval(questions, FakeAnswerer(), out, dataset="hrbench", method="vanilla", progress=False)
    with pytest.raises(ValueError, match="another run"):
        run_eval(questions, FakeAnswerer(), out, dataset="hrbench", config={"k": 3}, progress=False)
    lines = out.read_bytes().splitlines(keepends=True)
    out.write_bytes(b"garbage\n" + b"".join(lines))
    with pytest.raises(ValueError, match="line 1 is not a result row"):
        run_eval(questions, FakeAnswerer(), out, dataset="hrbench", progress=False)
    with pytest.raises(ValueError, match="repeated: \\['10'\\]"):
        run_eval(questions + questions[:1], FakeAnswerer(), tmp_path / "new.jsonl", dataset="hrbench", progress=False)


def test_a_rerun_of_another_run_is_refused_naming_the_difference(tmp_path):
    questions = load_dataset("hrbench", make_hrbench(tmp_path / "hr.tsv"))
    out = tmp_path / "res.jsonl"
    four_k = {"model": "m", "data": "hr_bench_4k.tsv: 100 bytes, sha1 aaa"}
    run_eval(questions[:2], FakeAnswerer(), out, dataset="hrbench", config={"k": 30}, identity=four_k, progress=False)
    assert all(
        row["run"]["data"] == four_k["data"] and row["run"]["package"].startswith("focus-modules")
        for row in read_rows(out)
    )
    # HR-Bench 8K has the same ids as 4K: without the identity check every question would be skipped
    eight_k = {**four_k, "data": "hr_bench_8k.tsv: 200 bytes, sha1 bbb"}
    with pytest.raises(
        ValueError,
        match="another run \\(data: 'hr_bench_4k.tsv.*' in the file, 'hr_bench_8k.tsv.*"
        "now\\): pass --overwrite .* or choose another --out",
    ):
        run_eval(questions, FakeAnswerer(), out, dataset="hrbench", config={"k": 30}, identity=eight_k, progress=False)
    with pytest.raises(ValueError, match="config.k: 30 in the file, 3 now"):
        run_eval(questions, FakeAnswerer(), out, dataset="hrbench", config={"k": 3}, identity=four_k, progress=False)
    # the same run resumes; --overwrite answers everything again
    answerer = FakeAnswerer()
    run_eval(questions, answerer, out, dataset="hrbench", config={"k": 30}, identity=four_k, progress=False)
    assert sum(map(len, answerer.calls)) == 2  # 3 new questions, one with a broken image
    answerer = FakeAnswerer()
    summary = run_eval(
        questions, answerer, out, dataset="hrbench", config={"k": 30}, identity=eight_k, overwrite=True, progress=False
    )
    assert sum(map(len, answerer.calls)) == 4 and summary["n"] == 5
    assert {row["run"]["data"] for row in read_rows(out)} == {eight_k["data"]}
    # rows of an older version (no run record) are refused too
    out.write_text("".join(json.dumps({k: v for k, v in r.items() if k != "run"}) + "\n" for r in read_rows(out)))
    with pytest.raises(ValueError, match="no run record"):
        run_eval(questions, FakeAnswerer(), out, dataset="hrbench", config={"k": 30}, identity=eight_k, progress=False)


def test_duplicate_ids_in_a_results_file_are_an_error_naming_the_fix(tmp_path):
    questions = load_dataset("hrbench", make_hrbench(tmp_path / "hr.tsv"))
    out = tmp_path / "res.jsonl"
    run_eval(questions[:2], FakeAnswerer(), out, dataset="hrbench", progress=False)
    lines = out.read_text().splitlines(keepends=True)
    out.write_text("".join(lines + lines[:1]))
    with pytest.raises(ValueError, match="two rows for question '10'.*--overwrite"):
        run_eval(questions, FakeAnswerer(), out, dataset="hrbench", progress=False)


def test_a_second_run_on_the_same_results_fails_at_once(tmp_path):
    questions = load_dataset("hrbench", make_hrbench(tmp_path / "hr.tsv"))
    out = tmp_path / "res.jsonl"
    with exclusive(out):
        answerer = FakeAnswerer()
        with pytest.raises(
            ResultsLockedError, match=f"res.jsonl is being written by another focus eval \\(pid {os.getpid()}"
        ):
            run_eval(questions, answerer, out, dataset="hrbench", progress=False)
        assert answerer.calls == [] and not out.exists()
    run_eval(questions, FakeAnswerer(), out, dataset="hrbench", progress=False)  # released
    assert len(read_rows(out)) == 5


def test_two_concurrent_processes_do_not_answer_twice(tmp_path):
    data = make_vstar(tmp_path / "vstar", extra=3)
    out = tmp_path / "res.jsonl"
    first = _worker("vstar", data, out, "--delay", "600")  # holds the lock until killed
    lock = tmp_path / "res.jsonl.lock"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and f"pid {first.pid}" not in (lock.read_text() if lock.exists() else ""):
        time.sleep(0.05)
    second = _worker("vstar", data, out, stderr=subprocess.PIPE, text=True)
    _, err = second.communicate(timeout=120)
    assert first.poll() is None, "the first run ended before the second started"
    assert second.returncode != 0 and f"is being written by another focus eval (pid {first.pid}" in err
    os.kill(first.pid, signal.SIGKILL)
    first.wait()
    assert _worker("vstar", data, out).wait(timeout=120) == 0  # the lock went with the killed process
    ids = _ids(read_rows(out))
    assert sorted(ids) == sorted(q.id for q in load_dataset("vstar", data)) and len(ids) == len(set(ids))


def test_leftover_shards_are_merged_by_a_single_process_run(tmp_path):
    questions = load_dataset("hrbench", make_hrbench(tmp_path / "hr.tsv"))
    out = tmp_path / "res.jsonl"
    # a torchrun job with 3 ranks was killed: rank 1 had answered question 1 (index 11)
    run_eval(questions, FakeAnswerer(), tmp_path / "ref.jsonl", dataset="hrbench", progress=False)
    ref = read_rows(tmp_path / "ref.jsonl")
    with appender(shard_path(out, 1)) as write:
        write(ref[1])
    answerer = FakeAnswerer()
    run_eval(questions, answerer, out, dataset="hrbench", progress=False)
    assert "What color is object 11?\tplease answer" not in [q for c in answerer.calls for q in c]
    assert _ids(read_rows(out)) == _ids(ref)
    assert not shard_path(out, 1).exists()


def _worker(*args, env=None, **kwargs):
    return subprocess.Popen([sys.executable, str(WORKER), *map(str, args)], env=env, **kwargs)


def test_resume_after_kill_9(tmp_path):
    data = make_vstar(tmp_path / "vstar", extra=10)
    out = tmp_path / "res.jsonl"
    proc = _worker("vstar", data, out, "--delay", "0.2")
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and (not out.exists() or out.read_bytes().count(b"\n") < 3):
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    written = read_rows(out)
    assert 3 <= len(written) < 13, "the run was not killed mid-way"
    rerun = _worker("vstar", data, out)
    assert rerun.wait(timeout=120) == 0
    rows = read_rows(out)
    expected = [q.id for q in load_dataset("vstar", data)]
    assert sorted(_ids(rows)) == sorted(expected) and len(rows) == len(set(_ids(rows)))
    assert rows[: len(written)] == written  # finished rows were kept, not redone


def test_torchrun_two_ranks_merge_to_the_single_process_rows(tmp_path):
    data = make_vstar(tmp_path / "vstar", extra=3)
    single, multi = tmp_path / "single.jsonl", tmp_path / "multi.jsonl"
    assert _worker("vstar", data, single).wait(timeout=120) == 0
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node=2",
        str(WORKER),
        "vstar",
        str(data),
        str(multi),
    ]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stderr[-3000:]
    volatile = {"seconds", "timings"}

    def stable(rows):
        return [{k: v for k, v in r.items() if k not in volatile} for r in rows]

    assert stable(read_rows(multi)) == stable(read_rows(single))
    assert not list(tmp_path.glob("multi.jsonl.rank*"))
    # each rank asked the model about its own interleaved shard only
    questions = [q for q in load_dataset("vstar", data) if q.id != "direct_attributes/sa_10"]  # corrupt image
    asked = [json.loads((tmp_path / f"multi.jsonl.asked{rank}").read_text()) for rank in (0, 1)]
    positions = {q.question: i for i, q in enumerate(load_dataset("vstar", data))}
    assert sorted(asked[0] + asked[1]) == sorted(q.question for q in questions)
    assert all(positions[q] % 2 == rank for rank in (0, 1) for q in asked[rank])
    summary_single = json.loads((tmp_path / "single.summary.json").read_text())
    summary_multi = json.loads((tmp_path / "multi.summary.json").read_text())
    assert summary_multi["run"]["world_size"] == 2
    for key in ("n", "accuracy", "accuracy_lenient", "per_category", "errors", "fp_search_mean", "roi_recall"):
        assert summary_multi[key] == summary_single[key]


def test_config_identity_leaves_inert_window_fields_out():
    from focus_modules.config import WINDOW_FIELDS, FocusConfig
    from focus_modules.eval.runner import config_dict

    plain = config_dict(FocusConfig.preset("llava-1.5", dataset="vstar"))
    assert not set(WINDOW_FIELDS) & set(plain) and plain["k"] == 30  # a file from before windows: same identity
    windowed = config_dict(FocusConfig.preset("llava-1.5", window_size=2048, window_combine="mean"))
    expected = {"window_size": 2048, "window_overlap": 0.5, "window_combine": "mean"}
    assert {k: windowed[k] for k in WINDOW_FIELDS} == expected
