"""aiprod serve: a real server on a free local port, two concurrent jobs, bad requests, a failing job,
the token, OpenAPI, and (optionally, headless Chromium through Playwright) the page at /."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request

import pytest

import aiprod_core.registry as registry_mod
from aiprod_pipelines.media import read_mp4

pytest.importorskip("fastapi", reason="aiprod serve needs the [serve] extra")
pytest.importorskip("uvicorn", reason="aiprod serve needs the [serve] extra")
TOKEN = "s3cret-test-token"
DEADLINE_S = 240


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def call(base, path, body=None, token=TOKEN, raw=None):
    data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
    req = urllib.request.Request(base + path, data=data, method="POST" if data is not None else "GET")
    req.add_header("Content-Type", "application/json")
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            payload = r.read()
            return r.status, (json.loads(payload) if r.headers.get_content_type() == "application/json" else payload)
    except urllib.error.HTTPError as err:
        payload = err.read()
        try:
            return err.code, json.loads(payload or b"{}")
        except ValueError:
            return err.code, {"detail": payload.decode(errors="replace")}


@pytest.fixture(scope="module")
def server(tmp_path_factory, request):
    reg = registry_mod.get_registry()
    needed = {("text-encoder", "gemma3-lora"), ("video-denoiser", "shdt"), ("video-autoencoder", "hwvae"),
              ("sampler", "euler")}
    if not needed <= set(reg.components):
        pytest.skip("component packages not installed")
    REPO = __import__("pathlib").Path(__file__).resolve().parents[3]  # not `from conftest`: another package's conftest may hold that name in the full run

    tmp = tmp_path_factory.mktemp("serve")
    template = {"pipeline": "text-to-video", "prompt": "a red circle moving left over a photo of a cat",
                "output": "out.mp4", "width": 64, "height": 64, "frames": 9, "fps": 8, "steps": 3,
                "text_encoder": {"name": "gemma3-lora", "weights": str(REPO / "weights/tiny/text_encoder")},
                "denoiser": {"name": "shdt", "weights": str(REPO / "weights/tiny/shdt")},
                "autoencoder": {"name": "hwvae", "weights": str(REPO / "weights/tiny/hwvae")}}
    if ("speech-synthesizer", "fastspeech2-hifigan") in reg.components:
        template["speech"] = {"name": "fastspeech2-hifigan", "weights": str(REPO / "weights/tiny/tts")}
    (tmp / "t2v.yaml").write_text(json.dumps(template))  # JSON is YAML
    port = _free_port()
    log = open(tmp / "server.log", "w")
    env = {**os.environ, "AIPROD_SERVE_TOKEN": TOKEN, "OMP_NUM_THREADS": "1", "AIPROD_QUIET": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "aiprod_core.cli", "serve", str(tmp / "t2v.yaml"), "--port",
                             str(port), "--device", "cpu", "--jobs-dir", str(tmp / "jobs")],
                            stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    t0 = time.time()
    while True:
        if proc.poll() is not None:
            pytest.fail(f"aiprod serve exited with {proc.returncode}: {(tmp / 'server.log').read_text()[-2000:]}")
        try:
            code = call(base, "/openapi.json")[0]
            if code == 200:
                break
            pytest.fail(f"/openapi.json answered {code}: {(tmp / 'server.log').read_text()[-2000:]}")
        except (urllib.error.URLError, ConnectionError):
            pass
        if time.time() - t0 > DEADLINE_S:
            proc.kill()
            pytest.fail("aiprod serve did not answer in time")
        time.sleep(0.5)
    yield base, tmp
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
    log.close()


def wait(base, job_id):
    t0 = time.time()
    while time.time() - t0 < DEADLINE_S:
        code, job = call(base, f"/v1/jobs/{job_id}")
        assert code == 200
        if job["status"] in ("done", "failed"):
            return job
        time.sleep(0.3)
    pytest.fail(f"job {job_id} did not finish")


def test_two_concurrent_jobs_give_two_mp4s(server):
    base, tmp = server
    results = {}

    def submit(i, prompt):
        results[i] = call(base, "/v1/jobs", {"template": "t2v", "prompt": prompt, "seed": i})

    threads = [threading.Thread(target=submit, args=(i, p)) for i, p in
               enumerate(["a blue square moving up over a photo of an astronaut", "a yellow circle moving right"])]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    ids = []
    for code, job in results.values():
        assert code == 202 and job["status"] in ("queued", "running")
        ids.append(job["id"])
    for i, job_id in enumerate(ids):
        job = wait(base, job_id)
        assert job["status"] == "done" and job["progress"] == 1.0, job
        code, data = call(base, f"/v1/jobs/{job_id}/output")
        assert code == 200
        path = tmp / f"got{i}.mp4"
        path.write_bytes(data)
        clip = read_mp4(path)
        assert clip.frames.shape[1:] == (64, 64, 3) and clip.frames.shape[0] >= 9
    assert len({(tmp / f"got{i}.mp4").read_bytes() for i in range(2)}) == 2


def test_bad_requests_get_4xx_with_the_cli_lines(server):
    base, _ = server
    code, body = call(base, "/v1/jobs", {"template": "t2v", "width": 40, "frames": 8})
    assert code == 422
    assert any("width" in line and "multiple of 16" in line for line in body["errors"])
    assert any(line.startswith("request: frames") for line in body["errors"]), body
    code, body = call(base, "/v1/jobs", {"pipeline": "nope", "output": "x.mp4"})
    assert code == 422 and "unknown pipeline 'nope'" in body["detail"]
    assert call(base, "/v1/jobs", {"template": "t2v", "output": "x.avi"})[0] == 422
    assert call(base, "/v1/jobs", raw=b"{not json")[0] == 400
    assert call(base, "/v1/jobs", ["a list"])[0] == 422
    assert call(base, "/v1/jobs/doesnotexist")[0] == 404
    assert call(base, "/v1/jobs", {"template": "t2v"}, token=None)[0] == 401
    assert call(base, "/v1/jobs", {"template": "t2v"}, token="wrong")[0] == 401


def test_a_failing_job_does_not_take_the_server_down(server):
    base, _ = server
    code, job = call(base, "/v1/jobs", {"template": "t2v", "image": "/no/such/image.png"})
    assert code == 202
    job = wait(base, job["id"])
    assert job["status"] == "failed" and "image" in job["error"] and "not found" in job["error"]
    assert call(base, f"/v1/jobs/{job['id']}/output")[0] == 409
    code, job = call(base, "/v1/jobs", {"template": "t2v", "steps": 1})
    assert wait(base, job["id"])["status"] == "done"


def test_openapi_and_page(server):
    base, _ = server
    code, spec = call(base, "/openapi.json", token=None)
    assert code == 200 and {"/v1/jobs", "/v1/jobs/{job_id}", "/v1/jobs/{job_id}/output"} <= set(spec["paths"])
    code, page = call(base, "/", token=None)
    assert code == 200 and b"<textarea id=\"prompt\"" in page


def _drive_page(base, find, fill, click, wait_js, js):
    """Type a prompt, submit, wait for the video; the same steps for Playwright and Selenium."""
    fill("#token", TOKEN)
    js("document.getElementById('token').dispatchEvent(new Event('change'))")
    wait_js("document.querySelectorAll('#template option').length > 0")
    fill("#prompt", "a green triangle moving down")
    click("#go")
    wait_js("!document.getElementById('video').hidden || document.getElementById('error').textContent !== ''")
    assert js("return document.getElementById('error').textContent") in ("", None)
    assert js("return document.getElementById('bar').value") == 1
    assert js("return document.getElementById('video').src").startswith("blob:")
    assert js("return document.getElementById('status').textContent").endswith("done")


def test_page_in_headless_chromium(server):
    """Optional: the page at / in headless Chromium (Playwright with its browser, or Selenium with a system
    chromium + chromedriver, e.g. Debian's `apt-get install chromium chromium-driver`)."""
    import shutil

    base, _ = server
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        sync_playwright = None
    if sync_playwright is not None:
        with sync_playwright() as p:
            try:
                browser = p.chromium.launch()
            except Exception as err:  # noqa: BLE001 - no browser binary
                pytest.skip(f"Playwright's Chromium is not installed: {err}")
            page = browser.new_page()
            page.goto(base + "/")
            _drive_page(base, page.query_selector, page.fill, page.click,
                        lambda expr: page.wait_for_function(expr, timeout=DEADLINE_S * 1000),
                        lambda code: page.evaluate(f"() => {{ {code if 'return' in code else code + ';'} }}"))
            browser.close()
        return
    webdriver = pytest.importorskip("selenium.webdriver", reason="neither playwright nor selenium is installed")
    driver_path = shutil.which("chromedriver")
    if driver_path is None:
        pytest.skip("no chromedriver on PATH (apt-get install chromium chromium-driver)")
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    opts = webdriver.ChromeOptions()
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu"):
        opts.add_argument(arg)
    driver = webdriver.Chrome(service=Service(driver_path), options=opts)
    try:
        driver.get(base + "/")

        def fill(sel, text):
            el = driver.find_element(By.CSS_SELECTOR, sel)
            el.clear()
            el.send_keys(text)

        _drive_page(base, lambda sel: driver.find_element(By.CSS_SELECTOR, sel), fill,
                    lambda sel: driver.find_element(By.CSS_SELECTOR, sel).click(),
                    lambda expr: WebDriverWait(driver, DEADLINE_S).until(lambda d: d.execute_script(f"return {expr}")),
                    lambda code: driver.execute_script(code if "return" in code else code + ";"))
    finally:
        driver.quit()
