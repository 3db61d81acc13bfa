"""The sweep report: PNG plots, the HTML pages, and the results page in headless Chromium."""

from __future__ import annotations

import html
import re
import shutil
import struct
import subprocess
import time
import uuid

import httpx
import pytest

from service import pages, plots
from service.results import METRICS

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
DEGREE = "method.basis.degree"


def make_row(method: str, degree: int, repeat: int = 0, status: str = "succeeded", **values) -> dict:
    """Return a result row with every metric: errors falling and time growing with the degree."""
    row = {"index": None, "job_id": uuid.uuid4().hex, "repeat": repeat, "seed": repeat,
           "status": status, "method": method, DEGREE: degree, **dict.fromkeys(METRICS),
           "converged": None, "peak_memory_scope": None, "peak_gpu_memory_mb": None,
           "hardware": "test CPU", "worker": "test@host"}
    if status == "succeeded":
        row.update({"box_max_log10": -degree / 2.0, "box_mean_log10": -degree / 2.0 - 1,
                    "path_max_log10": -degree / 2.5, "path_mean_log10": -degree / 2.5 - 1,
                    "path_share_outside": 0.0, "setup_s": 0.01, "solve_s": 1e-3 * degree ** 2,
                    "evaluate_s": 0.2, "total_s": 0.3, "solve_cpu_s": 1e-3 * degree ** 2,
                    "n_params": (degree + 1) ** 2, "n_conditions": (degree + 1) ** 2,
                    "condition_number": 10.0 * degree, "iterations": 5, "converged": True,
                    "peak_memory_mb": 300.0 + degree, "peak_memory_scope": "job"})
    row.update(values)
    return row


def make_rows(methods=("chebyshev",), degrees=(2, 4, 8, 16, 32), repeats=1) -> list[dict]:
    rows = [make_row(method, degree, repeat) for method in methods for degree in degrees
            for repeat in range(repeats)]
    for index, row in enumerate(rows):
        row["index"] = index
    return rows


def assert_png(image: bytes, min_bytes: int = 5000) -> tuple[int, int]:
    """Assert image is a PNG of at least min_bytes; return its width and height."""
    assert image[:8] == PNG_SIGNATURE
    assert len(image) > min_bytes
    width, height = struct.unpack(">II", image[16:24])
    return width, height


def test_metric_plot_is_png():
    width, height = assert_png(plots.metric_plot(make_rows(), "solve_s", DEGREE, [DEGREE]))
    assert (width, height) == (800, 500)


@pytest.mark.parametrize("metric", METRICS)
def test_every_metric_plots(metric):
    rows = make_rows(("chebyshev", "spline"))
    assert_png(plots.metric_plot(rows, metric, DEGREE, [DEGREE]))


def test_two_methods_differ_from_one():
    one = plots.metric_plot(make_rows(("chebyshev",)), "box_max_log10", DEGREE, [DEGREE])
    two = plots.metric_plot(make_rows(("chebyshev", "spline")), "box_max_log10", DEGREE, [DEGREE])
    assert_png(one)
    assert_png(two)
    assert one != two


def test_frontier_two_methods_differ_from_one():
    one = plots.frontier_plot(make_rows(("chebyshev",)), [DEGREE])
    two = plots.frontier_plot(make_rows(("chebyshev", "spline")), [DEGREE])
    assert_png(one)
    assert_png(two)
    assert one != two


def test_log_axes_chosen():
    rows = make_rows(degrees=(2, 4, 8, 16, 32))
    assert plots.metric_scales(rows, "solve_s", DEGREE) == ("log", "log")
    assert plots.metric_scales(rows, "n_params", DEGREE) == ("log", "log")
    # log10 errors are logarithms already; memory from 302 to 332 MiB spans no decade.
    assert plots.metric_scales(rows, "box_max_log10", DEGREE) == ("log", "linear")
    assert plots.metric_scales(rows, "peak_memory_mb", "n_params") == ("log", "linear")


def test_linear_axes_for_narrow_range():
    rows = make_rows(degrees=(2, 3, 4, 5))
    for row in rows:
        row["peak_memory_mb"] = 10.0 * row[DEGREE] ** 3
    assert plots.metric_scales(rows, "solve_s", DEGREE) == ("linear", "linear")
    assert plots.metric_scales(rows, "peak_memory_mb", DEGREE) == ("linear", "log")
    # n_params is always on a log axis, even over less than a factor 10.
    assert plots.metric_scales(rows, "solve_s", "n_params") == ("log", "linear")


def test_linear_y_with_zero_time():
    rows = make_rows()
    rows[0]["solve_s"] = 0.0
    assert plots.metric_scales(rows, "solve_s", DEGREE) == ("log", "linear")
    assert_png(plots.metric_plot(rows, "solve_s", DEGREE, [DEGREE]))


def test_slope_of_power_law():
    c = 3.7e-4
    degrees = (2, 3, 5, 8, 13, 21)
    rows = make_rows(("chebyshev", "spline"), degrees)
    for row in rows:
        power = 2 if row["method"] == "chebyshev" else 3
        row["solve_s"] = c * row[DEGREE] ** power
    slopes = plots.loglog_slopes(rows, DEGREE, [DEGREE])
    assert set(slopes) == {"chebyshev", "spline"}
    assert abs(slopes["chebyshev"] - 2) < 1e-9
    assert abs(slopes["spline"] - 3) < 1e-9


def test_slope_uses_median_of_repeats():
    c = 2e-3
    rows = make_rows(("chebyshev",), (4, 8, 16), repeats=3)
    for row in rows:
        row["solve_s"] = c * row[DEGREE] ** 2 * (1.0, 1.5, 0.5)[row["repeat"]]
    slopes = plots.loglog_slopes(rows, DEGREE, [DEGREE, "seed"])
    assert abs(slopes["chebyshev"] - 2) < 1e-9


def test_slope_none_below_two_points():
    rows = make_rows(("chebyshev",), (4, 8)) + [make_row("spline", 4), make_row("spline", 8, status="failed")]
    slopes = plots.loglog_slopes(rows, DEGREE, [DEGREE])
    assert slopes["spline"] is None
    assert slopes["chebyshev"] is not None


def test_slope_against_n_params():
    rows = make_rows(degrees=(3, 7, 15))
    for row in rows:
        row["solve_s"] = 1e-5 * row["n_params"] ** 1.5
    # Against n_params the degree does not split the series: it moves n_params.
    slopes = plots.loglog_slopes(rows, "n_params", [DEGREE])
    assert set(slopes) == {"chebyshev"}
    assert abs(slopes["chebyshev"] - 1.5) < 1e-9


def test_slope_rejects_text_x():
    rows = make_rows()
    for row in rows:
        row["method.basis.kind"] = "chebyshev"
    with pytest.raises(ValueError, match="not numeric"):
        plots.loglog_slopes(rows, "method.basis.kind", ["method.basis.kind", DEGREE])


def test_unknown_metric_names_choices():
    with pytest.raises(ValueError) as caught:
        plots.metric_plot(make_rows(), "speed", DEGREE, [DEGREE])
    assert "'speed'" in str(caught.value)
    assert "box_max_log10" in str(caught.value)
    assert "solve_s" in str(caught.value)


def test_unknown_x_names_choices():
    with pytest.raises(ValueError) as caught:
        plots.metric_plot(make_rows(), "solve_s", "model.params.gamma", [DEGREE])
    assert "'model.params.gamma'" in str(caught.value)
    assert DEGREE in str(caught.value)
    assert "n_params" in str(caught.value)


def test_unknown_frontier_metric_names_choices():
    with pytest.raises(ValueError, match="valid metrics: .*box_max_log10"):
        plots.frontier_plot(make_rows(), [DEGREE], accuracy="accuracy")


def test_failed_rows_skipped():
    rows = make_rows() + [make_row("chebyshev", 64, status="failed"),
                          make_row("chebyshev", 128, status="diverged", solve_s=5.0)]
    kept = plots.metric_plot(rows, "solve_s", DEGREE, [DEGREE])
    assert_png(kept)
    # The left-out jobs change only the footnote, not the drawn range: the x axis of
    # the diverged job at degree 128 would widen it.
    assert plots.metric_scales(rows, "solve_s", DEGREE) == plots.metric_scales(make_rows(), "solve_s", DEGREE)


def test_plot_without_data_is_png():
    rows = [make_row("chebyshev", degree, status="failed") for degree in (2, 4)]
    assert_png(plots.metric_plot(rows, "solve_s", DEGREE, [DEGREE]))
    assert_png(plots.frontier_plot(rows, [DEGREE]))
    assert_png(plots.metric_plot([], "solve_s", "n_params", []))


def test_no_data_plot_differs_from_data():
    failed = [make_row("chebyshev", degree, status="failed") for degree in (2, 4)]
    succeeded = make_rows(degrees=(2, 4))
    assert plots.metric_plot(failed, "solve_s", DEGREE, [DEGREE]) != \
        plots.metric_plot(succeeded, "solve_s", DEGREE, [DEGREE])


def test_text_x_drawn_as_categories():
    rows = []
    for method, solve_s in (("chebyshev deg 4", 0.01), ("spline n 20", 0.5), ("nn 2x32 tanh", 20.0)):
        for repeat in range(2):
            row = make_row(method, 4, repeat, solve_s=solve_s)
            row.pop(DEGREE)
            rows.append(row)
    varied = ["method", "seed"]
    assert plots.default_x(rows, varied) == "n_params"
    assert plots.metric_scales(rows, "solve_s", "method") == ("linear", "log")
    assert_png(plots.metric_plot(rows, "box_max_log10", "method", varied))


def test_series_split_by_other_varied_field():
    rows = make_rows(degrees=(2, 4, 8))
    for row in list(rows):
        rows.append({**row, "model.params.gamma": 5.0})
        row["model.params.gamma"] = 2.0
    varied = ["model.params.gamma", DEGREE]
    slopes = plots.loglog_slopes(rows, DEGREE, varied)
    assert set(slopes) == {"chebyshev, gamma=2", "chebyshev, gamma=5"}
    assert_png(plots.metric_plot(rows, "solve_s", DEGREE, varied))


def test_pareto_frontier():
    points = [(3.0, -5.0), (1.0, -3.0), (2.0, -2.0), (4.0, -4.0), (5.0, -6.0)]
    assert plots.pareto_frontier(points) == [(1.0, -3.0), (3.0, -5.0), (5.0, -6.0)]


def test_metric_labels_in_words():
    assert plots.metric_label("box_max_log10") == "max log10 Euler error (box)"
    assert plots.metric_label("solve_s") == "solve time (s)"
    assert plots.metric_label("path_binding_max") == "max complementarity error at binding points (path)"
    assert plots.field_label(DEGREE) == f"degree ({DEGREE})"


def test_extra_error_metrics_valid():
    rows = make_rows()
    for row in rows:
        row["box_binding_max"] = 1e-4 * row[DEGREE]
    assert "box_binding_max" in plots.valid_metrics(rows)
    assert_png(plots.metric_plot(rows, "box_binding_max", DEGREE, [DEGREE]))


def sweep_record(rows: list[dict], name: str = "degrees", status: str = "done",
                 grid: dict | None = None) -> dict:
    return {"id": "0123456789abcdef0123456789abcdef", "name": name,
            "created_at": "2025-01-01T00:00:00+00:00",
            "base": {"method": {"basis": {"kind": "chebyshev"}}},
            "grid": grid or {DEGREE: sorted({row[DEGREE] for row in rows})},
            "repeats": 1, "seeds": [0], "varied": [DEGREE],
            "job_ids": [row["job_id"] for row in rows],
            "counts": {"succeeded": len(rows)}, "progress": 1.0, "status": status,
            "submitter": None}


def test_page_escapes_user_input():
    attack = '<script>alert("x")</script>'
    rows = make_rows(degrees=(2, 4))
    rows[0]["method"] = attack
    sweep = sweep_record(rows, name=attack, grid={DEGREE: [2, 4], "label": [attack]})
    page = pages.render_sweep_page(sweep, rows)
    assert attack not in page
    assert '<script>alert' not in page
    assert html.escape(attack) in page
    assert page.count("<script>") == 1


def test_page_lists_every_job():
    rows = make_rows(("chebyshev", "spline"), (2, 4, 8))
    page = pages.render_sweep_page(sweep_record(rows), rows)
    table = page[page.index('id="results"'):]
    table = table[:table.index("</table>")]
    assert table.count("<tr>") == 1 + len(rows)
    for row in rows:
        assert row["job_id"] in table


def test_page_links_every_plot():
    rows = make_rows(("chebyshev", "spline"), (2, 4, 8))
    page = pages.render_sweep_page(sweep_record(rows), rows)
    sources = re.findall(r'<img[^>]* src="([^"]+)"', page)
    base = "/v1/sweeps/0123456789abcdef0123456789abcdef/plots/"
    assert f"{base}frontier.png" in sources
    for metric in ("box_max_log10", "path_max_log10", "solve_s", "peak_memory_mb"):
        assert f"{base}{metric}.png?x={DEGREE}" in sources


def test_page_shows_slopes():
    rows = make_rows(("chebyshev",), (2, 4, 8))
    page = pages.render_sweep_page(sweep_record(rows), rows)
    slopes = page[page.index("Log-log slope"):page.index("Results (")]
    assert "<td data-sort=\"2.0\">2</td>" in slopes


def test_page_leaves_out_slopes_without_points():
    # Each number of countries is its own series against K, with one point each.
    countries = "model.params.countries"
    rows = make_rows(("smolyak",), (2, 4, 8))
    for row, n in zip(rows, (1, 2, 4)):
        row[countries] = n
    sweep = {**sweep_record(rows, grid={countries: [1, 2, 4]}), "varied": [countries]}
    page = pages.render_sweep_page(sweep, rows)
    slopes = page[page.index("Log-log slope"):page.index("Results (")]
    assert "n/a: fewer than two points" not in slopes
    assert "parameter count" not in slopes
    assert "<td data-sort=\"2.0\">2</td>" in slopes


def test_page_refreshes_only_while_running():
    rows = make_rows(degrees=(2, 4))
    running = pages.render_sweep_page(sweep_record(rows, status="running"), rows)
    done = pages.render_sweep_page(sweep_record(rows, status="done"), rows)
    assert f'data-refresh-s="{pages.REFRESH_S}"' in running
    assert "data-refresh-s" not in done.split("<script>")[0]


def test_page_refreshes_while_jobs_of_cancelled_sweep_run():
    rows = make_rows(degrees=(2, 4))
    sweep = {**sweep_record(rows, status="cancelled"), "progress": 0.5}
    assert "data-refresh-s" in pages.render_sweep_page(sweep, rows)


# Headless Chromium: Debian's `chromium` package; .ci/run installs it when it is missing.
CHROMIUM = shutil.which("chromium")
needs_chromium = pytest.mark.skipif(CHROMIUM is None, reason="no chromium binary on PATH "
                                    "(.ci/run installs Debian's chromium package when apt-get works)")


def run_chromium(tmp_path, *args: str) -> subprocess.CompletedProcess:
    """Run headless Chromium with a profile of its own under tmp_path, waiting up to 15 s of page time."""
    command = [CHROMIUM, "--headless", "--disable-gpu", "--no-sandbox", "--no-first-run",
               f"--user-data-dir={tmp_path / 'chromium-profile'}", "--virtual-time-budget=15000", *args]
    result = subprocess.run(command, capture_output=True, text=True, timeout=180)
    assert result.returncode == 0, result.stderr[-2000:]
    return result


def body_attributes(dom: str) -> dict[str, str]:
    """Return the attributes of the <body> tag of a DOM dump."""
    tag = re.search(r"<body([^>]*)>", dom).group(1)
    return dict(re.findall(r'([\w-]+)="([^"]*)"', tag))


def result_job_ids(dom: str) -> list[str]:
    """Return the job ids of the results table's rows, in the order shown."""
    table = dom[dom.index('id="results"'):]
    body = table[table.index("<tbody>"):table.index("</tbody>")]
    return re.findall(r'data-sort="([0-9a-f]{32})"', body)


@needs_chromium
def test_table_sorts_numbers_in_browser(tmp_path):
    rows = make_rows(degrees=(2, 4, 8))
    for row, n_params in zip(rows, (10, 9, 100)):
        row["n_params"] = n_params
    rows.insert(1, make_row("chebyshev", 16, status="failed", index=3))
    page = pages.render_sweep_page(sweep_record(rows), rows)
    header_index = re.findall(r"<th>([^<]*)</th>", page[page.index('id="results"'):]).index("parameter count K")
    click = f'<script>document.querySelectorAll("#results th")[{header_index}].click();</script>'
    (tmp_path / "page.html").write_text(page.replace("</body>", click + "</body>"))

    dom = run_chromium(tmp_path, "--dump-dom", (tmp_path / "page.html").as_uri()).stdout
    by_id = {row["job_id"]: row for row in rows}
    shown = [by_id[job_id]["n_params"] for job_id in result_job_ids(dom)]
    # Numeric order (9 before 10 before 100, not text order), the empty cell last.
    assert shown == [9, 10, 100, None]


@pytest.fixture(scope="module")
def client(stack):
    with httpx.Client(base_url=stack.api_url, timeout=60) as http:
        yield http


@pytest.fixture(scope="module")
def finished_sweep(client):
    """A four-job sweep over Chebyshev degrees 2 to 5, run to its end by the real worker."""
    body = {"name": "report <b>degrees</b>", "base": {"method": {"basis": {"kind": "chebyshev"}}},
            "grid": {DEGREE: [2, 3, 4, 5]}}
    reply = client.post("/v1/sweeps", json=body)
    assert reply.status_code == 202, reply.text
    sweep_id = reply.json()["id"]

    deadline = time.monotonic() + 240
    sweep = client.get(f"/v1/sweeps/{sweep_id}").json()
    while sweep["status"] == "running":
        assert time.monotonic() < deadline, f"sweep {sweep_id} still running: {sweep['counts']}"
        time.sleep(0.5)
        sweep = client.get(f"/v1/sweeps/{sweep_id}").json()
    assert sweep["status"] == "done"
    assert sweep["counts"] == {"succeeded": 4}
    return sweep


def get_png(client, path: str, **params) -> bytes:
    reply = client.get(path, params=params)
    assert reply.status_code == 200, reply.text
    assert reply.headers["content-type"] == "image/png"
    assert_png(reply.content)
    return reply.content


def test_every_plot_endpoint_is_png(client, finished_sweep):
    base = f"/v1/sweeps/{finished_sweep['id']}/plots"
    images = {metric: get_png(client, f"{base}/{metric}.png") for metric in METRICS}
    for metric in ("box_max_log10", "solve_s", "peak_memory_mb"):
        for x in (DEGREE, "n_params"):
            get_png(client, f"{base}/{metric}.png", x=x)
    get_png(client, f"{base}/frontier.png")
    get_png(client, f"{base}/frontier.png", accuracy="path_max_log10", time="total_s")
    assert images["box_max_log10"] != images["solve_s"]


def test_plot_default_x_is_first_numeric_field(client, finished_sweep):
    base = f"/v1/sweeps/{finished_sweep['id']}/plots"
    assert client.get(f"{base}/solve_s.png").content == client.get(f"{base}/solve_s.png", params={"x": DEGREE}).content


def test_plot_unknown_metric_is_422(client, finished_sweep):
    reply = client.get(f"/v1/sweeps/{finished_sweep['id']}/plots/speed.png")
    assert reply.status_code == 422
    assert "'speed'" in reply.json()["message"]
    assert "box_max_log10" in reply.json()["message"]


def test_plot_unknown_x_is_422(client, finished_sweep):
    reply = client.get(f"/v1/sweeps/{finished_sweep['id']}/plots/solve_s.png", params={"x": "model.params.gamma"})
    assert reply.status_code == 422
    assert "'model.params.gamma'" in reply.json()["message"]
    assert DEGREE in reply.json()["message"]


def test_unknown_sweep_is_404(client):
    missing = "f" * 32
    assert client.get(f"/v1/sweeps/{missing}/plots/solve_s.png").status_code == 404
    assert client.get(f"/v1/sweeps/{missing}/plots/frontier.png").status_code == 404
    page = client.get(f"/sweeps/{missing}")
    assert page.status_code == 404
    assert page.headers["content-type"].startswith("text/html")
    assert f"sweep {missing} not found" in page.text


def test_index_links_sweep(client, finished_sweep):
    reply = client.get("/")
    assert reply.status_code == 200
    assert reply.headers["content-type"].startswith("text/html")
    assert f'href="/sweeps/{finished_sweep["id"]}"' in reply.text
    assert "report &lt;b&gt;degrees&lt;/b&gt;" in reply.text
    for job_id in finished_sweep["job_ids"]:
        assert f'href="/v1/jobs/{job_id}"' in reply.text


def test_results_page_html(client, finished_sweep):
    reply = client.get(f"/sweeps/{finished_sweep['id']}")
    assert reply.status_code == 200
    assert reply.headers["content-type"].startswith("text/html")
    assert "report &lt;b&gt;degrees&lt;/b&gt;" in reply.text
    assert "<b>degrees</b>" not in reply.text
    assert "data-refresh-s" not in reply.text.split("<script>")[0]


@needs_chromium
def test_results_page_in_chromium(client, finished_sweep, stack, tmp_path):
    url = f"{stack.api_url}/sweeps/{finished_sweep['id']}"
    dom = run_chromium(tmp_path, "--dump-dom", url).stdout

    assert sorted(result_job_ids(dom)) == sorted(finished_sweep["job_ids"])
    n_images = len(re.findall(r"<img ", dom))
    assert n_images >= 6
    attributes = body_attributes(dom)
    assert attributes.get("data-images-failed") == "0", attributes
    assert attributes.get("data-images-loaded") == str(n_images), attributes

    screenshot = tmp_path / "sweep-page.png"
    run_chromium(tmp_path, f"--screenshot={screenshot}", "--window-size=1400,2000", url)
    assert_png(screenshot.read_bytes(), min_bytes=20_000)
