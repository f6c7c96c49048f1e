"""Command-line start-up: `digits --help`, `digits status JOB` (ended and running), a --no-wait submission.

    python bench/bench_cli.py [--data DIR] [--rounds 11]

With `digits up --no-flower` running, interleaves for --rounds rounds (medians printed):
  - `python -c pass` (the interpreter alone: the floor of any Python command here);
  - `digits --help`;
  - `digits status JOB` of an ended job (answered from storage alone);
  - `digits status JOB` of a running job (a 1,000,000-row job kept running meanwhile; its
    state comes from the broker);
  - `digits predict test.csv ... --no-wait` (10,000 rows; submission only).
Each is a subprocess timed from its start to its exit, run as a user runs `digits`
(python -m worker.cli, bytecode cached). Also lists which of NumPy, Celery, Redis, pandas
and PIL each status command imports. Target: --help and status under 150 ms.
"""
import json
import os
import sys
import tempfile

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from bench.bench_predict import bench_model  # noqa: E402
from bench.common import Up, digits_argv, figures, median, mnist_csv, parser, mnist_rows, run_child  # noqa: E402

HEAVY = ("numpy", "celery", "redis", "pandas", "PIL")


def imported(env, *args):
    """Which HEAVY modules `digits ARGS` has imported when it is done."""
    code = ("import sys; from worker.cli import main; rc = main(sys.argv[1:]); "
            f"print('MODULES', [m for m in {HEAVY!r} if m in sys.modules])")
    _, _, _, out, _ = run_child([sys.executable, "-c", code, *map(str, args)], env)
    line = [ln for ln in out.splitlines() if ln.startswith("MODULES")]
    return line[0][len("MODULES "):] if line else "?"


def main():
    p = parser(__doc__)
    p.add_argument("--rounds", type=int, default=11)
    a = p.parse_args()
    _, test_csv = mnist_csv(a.data)
    big = mnist_rows(a.data, 1_000_000)
    work = tempfile.mkdtemp(prefix="digits-bench-cli-")
    model_path, _ = bench_model(work)
    home = os.path.join(work, "home")
    with Up(home, DIGITS_PREDICT_CONCURRENCY=2) as up:
        env = up.env
        code, out = run_child(digits_argv("predict", test_csv, "--model", model_path, "--out",
                                          os.path.join(work, "ended.csv")), env)[2:4]
        assert code == 0
        ended = json.loads(run_child(digits_argv("status", "--json", _last_job(home)), env)[3])["job_id"]

        def start_running():
            code, out = run_child(digits_argv("predict", big, "--model", model_path, "--out",
                                              os.path.join(work, "running.csv"), "--no-wait"), env)[2:4]
            assert code == 0, out
            return out.split()[-1]

        running = start_running()
        cmds = {"python -c pass": [sys.executable, "-c", "pass"],
                "digits --help": digits_argv("--help"),
                "digits status JOB (ended)": digits_argv("status", ended),
                "digits status JOB (running)": None,
                "digits predict --no-wait (submit 10,000 rows)": None}
        times = {k: [] for k in cmds}
        for r in range(a.rounds):
            for k, argv in cmds.items():
                if k.startswith("digits status JOB (running)"):
                    st = json.loads(run_child(digits_argv("status", "--json", running), env)[3])
                    if st["state"] not in ("PENDING", "PROGRESS"):
                        running = start_running()  # keep a job running for the next measurements
                    argv = digits_argv("status", running)
                elif k.startswith("digits predict --no-wait"):
                    argv = digits_argv("predict", test_csv, "--model", model_path, "--out",
                                       os.path.join(work, f"nowait-{r}.csv"), "--no-wait")
                wall, _, code, out, err = run_child(argv, env)
                assert code == 0, (k, out, err)
                times[k].append(wall)
        modules = {"ended": imported(env, "status", ended), "running": imported(env, "status", running)}
        run_child(digits_argv("cancel", running), env)
    m = {k: median(v) for k, v in times.items()}
    print(f"{a.rounds} interleaved rounds, `digits up` running, medians (start to exit):")
    for k, v in m.items():
        print(f"  {k:<48} {v * 1000:6.0f} ms")
    print(f"modules imported by status of an ended job: {modules['ended']}; of a running job: {modules['running']}")
    figures("cli", ms={k: v * 1000 for k, v in m.items()}, modules=modules)


def _last_job(home):
    jobs = os.path.join(home, "storage", "jobs")
    return max(os.listdir(jobs), key=lambda j: os.path.getmtime(os.path.join(jobs, j)))


if __name__ == "__main__":
    main()
