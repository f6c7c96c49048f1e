"""Flower in a real browser (playwright driving Debian's chromium), as a person watching the
queue sees it: the tasks page's columns, a training run's progress while it runs, the Broker
page's queues; and the job rows: a 1,000,000-row prediction job followed live to SUCCESS, a
job whose chunk failed for good shown as FAILURE. Screenshots go to the test's tmp dir.

Skipped where chromium is absent, unless DIGITS_REQUIRE_BROWSER=1 (CI sets it): then a
missing browser fails. The job rows (digits.predict_job, task id = the job id) are fed by
task events from the clients and the chunk marks (tasks/events.py).
"""
import os
import re
import tempfile
import time

import pytest

from model.data.samples import write_sample
from model.train import make_config
from tasks import jobfiles, records
from tests.conftest import wait_for, write_test_csv
from worker import services

pytestmark = pytest.mark.integration
CHROMIUM = os.environ.get("DIGITS_CHROMIUM", "/usr/bin/chromium")
REQUIRED = os.environ.get("DIGITS_REQUIRE_BROWSER") == "1"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
AUTH = ("tester", "s3cret-test")  # conftest's stack_env
COLUMNS = services.FLOWER_TASKS_COLUMNS.split(",")
JOB_TASK = "digits.predict_job"
BIG_ROWS = 1_000_000


# ----------------------------------------------------------------------------- the browser

def _why_no_browser():
    if not os.path.exists(CHROMIUM):
        return f"no chromium at {CHROMIUM} (apt-get install chromium; .ci/run does)"
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "the playwright package is not installed (pip install -e '.[test]')"
    return None


@pytest.fixture(scope="module")
def shots(tmp_path_factory):
    """Folder of the screenshots -> save(page, name)."""
    folder = tmp_path_factory.mktemp("flower-screenshots")

    def save(page, name):
        page.screenshot(path=str(folder / f"{name}.png"), full_page=True)
    save.folder = folder
    return save


@pytest.fixture(scope="module")
def page(live):
    """A page of a fresh chromium profile, logged in to the test stack's Flower."""
    why = _why_no_browser()
    if why:
        (pytest.fail if REQUIRED else pytest.skip)(why + ("; DIGITS_REQUIRE_BROWSER=1 needs it" if REQUIRED else ""))
    from playwright.sync_api import sync_playwright
    with sync_playwright() as p, tempfile.TemporaryDirectory() as profile:
        context = p.chromium.launch_persistent_context(
            profile, executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS,
            http_credentials={"username": AUTH[0], "password": AUTH[1]}, viewport={"width": 1680, "height": 1000})
        context.set_default_timeout(20_000)
        try:
            yield context.new_page()
        finally:
            context.close()


def flower(live, path=""):
    return live.stack.flower_url + path


# ----------------------------------------------------------------------------- reading Flower's pages

def visible_headers(page):
    """The column headers of the tasks table as shown, lower-cased (Flower's style shows them in
    capitals; DataTables draws them in its scroll head)."""
    page.wait_for_selector(".dataTables_scrollHead th")
    return [t.strip().lower() for t in page.locator(".dataTables_scrollHead th").all_inner_texts()]


# the tasks table has answered its current search: the reply to its latest request is drawn
ANSWERED = """(search) => {
    if (!window.$ || !$.fn.dataTable || !$.fn.dataTable.isDataTable('#tasks-table')) return false;
    const table = $('#tasks-table').DataTable(), settings = table.settings()[0];
    return table.search() === search && settings.json !== undefined && settings.json.draw === settings.iDraw;
}"""


def search_tasks(page, live, text):
    """The tasks page searched for `text` -> {task id: {column: cell text}} of the rows shown."""
    page.goto(flower(live, "/tasks"))
    box = page.locator("#tasks-table_filter input")
    box.fill(text)
    box.press("Enter")
    page.wait_for_function(ANSWERED, arg=text)
    return table_rows(page)


def table_rows(page):
    rows = page.evaluate("""() => Array.from(document.querySelectorAll('#tasks-table tbody tr[id]')).map(
        tr => [tr.id, Array.from(tr.querySelectorAll('td')).map(td => td.innerText.trim())])""")
    return {tid: dict(zip(COLUMNS, cells)) for tid, cells in rows}


def click_state_filter(page, label):
    """Click one of the tasks page's state filters (All, Started, Succeeded, Failed, Retried)
    and wait for the table to answer it -> its rows."""
    button = page.get_by_role("button", name=label, exact=True)
    button.click()
    state = button.get_attribute("data-task-state")
    page.wait_for_function(ANSWERED, arg=f"state:{state}" if state else "")
    return table_rows(page)


# ----------------------------------------------------------------------------- the tests

def test_the_tasks_page_shows_args_and_result_columns(live, page, shots, trained_model, sample, tmp_path):
    from worker.client import submit_prediction
    csv = write_test_csv(tmp_path / "t.csv", sample["test_x"][:100])
    job = submit_prediction(csv, trained_model[1], str(tmp_path / "out.csv"), app=live.app, settings=live.settings,
                            chunk_rows=50)
    assert job.wait(timeout=60)["state"] == "SUCCESS"
    page.goto(flower(live, "/tasks"))
    headers = visible_headers(page)
    assert {"args", "kwargs", "result"} <= set(headers), headers
    rows = search_tasks(page, live, job.id)
    assert rows, f"no row of job {job.id} on the tasks page"
    assert all(job.id in " ".join(r.values()) for r in rows.values())
    assert any(r["result"] for r in rows.values())  # results are shown, not only states
    shots(page, "tasks-columns")


def test_the_broker_page_lists_both_queues(live, page, shots):
    page.goto(flower(live, "/broker"))
    names = page.locator("#queue-table tbody tr td:first-child").all_inner_texts()
    assert sorted(n.strip() for n in names) == ["predict", "train"]
    shots(page, "broker")


@pytest.fixture(scope="class")
def training_run(live, tmp_path_factory):
    """A training run of a minute or so, running while the class's tests look at it; cancelled
    at the end (the run stops at its next batch)."""
    from worker.client import submit_training
    folder = tmp_path_factory.mktemp("browser-train")
    paths = write_sample(str(folder / "sample"), images=False)
    with open(paths["train"]) as f:
        header, body = f.readline(), f.readlines()
    data = folder / "train.csv"
    data.write_text(header + "".join(body * 8))  # 20,000 rows
    job = submit_training(str(data), "browserwatch", make_config("faithful", epochs=30, batch_size=8),
                          app=live.app, settings=live.settings)
    try:
        yield job
    finally:
        jobfiles.request_cancel(live.settings.storage, job.id)
        assert job.wait(timeout=120)["state"] in ("CANCELLED", "SUCCESS")


class TestATrainingRun:
    def test_its_progress_text_is_on_its_row_while_it_runs(self, live, page, shots, training_run):
        def progress_row():
            row = search_tasks(page, live, training_run.id).get(training_run.id)
            return row if row and re.search(r"epoch \d+/30 batch \d+/\d+ loss \d\.\d+", row["result"]) else None

        row = wait_for(progress_row, 90, "the training run's progress on its row", poll=0.5)
        assert jobfiles.read_manifest(live.settings.storage, training_run.id) is None  # still running
        assert row["name"] == "digits.train_job"
        shots(page, "training-running")
    def test_it_is_under_the_started_filter_and_the_active_link(self, live, page, shots, training_run):
        def under_started():
            page.goto(flower(live, "/tasks"))
            return click_state_filter(page, "Started").get(training_run.id)

        row = wait_for(under_started, 90, "the training run under the Started filter", poll=0.5)
        assert row["state"] == "STARTED" and re.search(r"epoch \d+/30 batch \d+/\d+", row["result"]), row
        shots(page, "training-started-filter")
        # the workers page's total of the Active column links to the same list
        page.goto(flower(live, "/workers"))
        link = page.locator("tfoot a[href$='/tasks?state=STARTED']:visible").first
        link.wait_for()  # drawn once a worker's heartbeat counts an active task
        # followed by its address: the table redraws every second, under a pointer's click too
        page.goto(live.stack.flower_url + link.get_attribute("href"))
        page.wait_for_url(re.compile(r"/tasks\?state=STARTED$"))
        page.wait_for_function(ANSWERED, arg="state:STARTED")
        found = table_rows(page).get(training_run.id)
        assert found and re.search(r"epoch \d+/30 batch \d+/\d+", found["result"]), table_rows(page)
        shots(page, "training-active-link")


def write_big_csv(path, pixels, rows):
    """A Kaggle test CSV of `rows` rows: one block of real digits as bytes, written again and
    again (cheap: no per-row formatting)."""
    block = "".join(",".join(map(str, r)) + "\n" for r in pixels.tolist()).encode()
    per_block = len(pixels)
    from model.data.block import PIXEL_COLUMNS
    with open(path, "wb") as f:
        f.write((",".join(PIXEL_COLUMNS) + "\n").encode())
        for _ in range(rows // per_block):
            f.write(block)
        f.write("".join(",".join(map(str, r)) + "\n" for r in pixels[: rows % per_block].tolist()).encode())
    return str(path)
def test_a_million_row_job_is_followed_on_its_row_to_success(live, page, shots, trained_model, sample, tmp_path):
    from worker.client import submit_prediction
    data = write_big_csv(tmp_path / "big.csv", sample["test_x"], BIG_ROWS)
    out = tmp_path / "big-out.csv"
    try:
        job = submit_prediction(data, trained_model[1], str(out), app=live.app, settings=live.settings)
        total = records.load(live.settings.storage, job.id).chunks
        seen = []  # chunks done, one per read of the row while the job ran
        deadline = time.monotonic() + 150
        while True:
            # the job's row (its task id is the job id), not its chunks' (their arguments name the job too)
            row = search_tasks(page, live, f"name:{JOB_TASK} {job.id}").get(job.id)
            if row is not None:
                assert row["name"] == JOB_TASK, row
                if row["state"] == "SUCCESS":
                    break
                if row["result"]:  # empty until its first chunk is counted
                    m = re.match(r"chunks (\d+)/(\d+) done", row["result"])
                    assert m and int(m[2]) == total, row
                    seen.append(int(m[1]))
                    if len(seen) == 2:
                        shots(page, "predict-job-running")
            assert time.monotonic() < deadline, f"job {job.id} not SUCCESS on its row; chunks seen {seen}"
        shots(page, "predict-job-success")
        # the count went up between two reads (events of two pool processes may arrive out of order,
        # so one read may show one chunk fewer than the read before it)
        assert any(later > earlier for i, earlier in enumerate(seen) for later in seen[i + 1:]), seen
        assert job.wait(timeout=60)["rows_ok"] == BIG_ROWS
        assert os.path.basename(out) in row["result"], row  # the summary names the output
    finally:
        for path in (tmp_path / "big.csv", out):
            if path.exists():
                path.unlink()
def test_a_chunk_that_fails_for_good_shows_failure_on_it_and_on_its_job(live, page, shots, trained_model, sample,
                                                                        tmp_path):
    from worker.client import submit_prediction
    csv = write_test_csv(tmp_path / "t.csv", sample["test_x"])
    job_id = f"predict-browserfail{os.getpid()}"
    os.makedirs(jobfiles.chunk_ref(live.settings.storage, job_id, 1))  # chunk 1's result cannot be written
    job = submit_prediction(csv, trained_model[1], str(tmp_path / "out.csv"), app=live.app, settings=live.settings,
                            chunk_rows=100, job_id=job_id)
    assert job.wait(timeout=90)["state"] == "PARTIAL"

    def failed_rows():
        rows = search_tasks(page, live, f"state:FAILURE {job_id}")
        mine = {tid: r for tid, r in rows.items() if job_id in " ".join([tid, r["args"], r["kwargs"]])}
        return mine if job_id in mine and any(r["name"] == "digits.predict_chunk" for r in mine.values()) else None

    mine = wait_for(failed_rows, 30, "the job and its failed chunk under the Failed filter", poll=0.5)
    shots(page, "partial-job-failed")
    assert mine[job_id]["name"] == JOB_TASK and mine[job_id]["state"] == "FAILURE"
    chunks = [r for r in mine.values() if r["name"] == "digits.predict_chunk"]
    assert len(chunks) == 1 and chunks[0]["state"] == "FAILURE", chunks  # that chunk alone
